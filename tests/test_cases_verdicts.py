"""Real-world cases about verdicts (from public reports), and siblings: notices never hide or fake a fault."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules in one process crashes, so everything the generated tests import is imported here first.
import peft  # noqa: F401
import transformers.trainer  # noqa: F401

from pytest_tokenguard.suite import zoo

pytest_plugins = ("pytester",)


@pytest.fixture(scope="module", autouse=True)
def _modules_loaded_outside_pytester(tmp_path_factory: pytest.TempPathFactory) -> None:
    model, tokenizer = zoo.build("smollm2-135m-instruct")
    model.resize_token_embeddings(len(tokenizer) + 1)
    zoo.lora_train(model, tokenizer, tmp_path_factory.mktemp("warm"), steps=1)


# pad-eos-end-of-turn-same: SmolLM2 prepared for chat SFT the way TRL's setup_chat_format did it (bos
# <|im_start|>, eos = pad = <|im_end|> everywhere), a resize that changes nothing (49152 -> 49152, which logs
# the Tensor-Cores hint TG140), then DataCollatorForLanguageModeling. The test must not fail on that notice.
SFT = """
import pytest
from pytest_tokenguard.suite import zoo

CHAT = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        [{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue."}]]

def chat_setup(family, grow=0):
    model, tok = zoo.build(family)
    tok.bos_token, tok.eos_token, tok.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"
    model.resize_token_embeddings(len(tok) + grow)
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    return model, tok

@pytest.mark.parametrize(("family", "grow"), [("smollm2-135m-instruct", 0), ("qwen2.5-0.5b-instruct", 0),
                                              ("smollm2-135m-instruct", 3)])
def test_sft_chat(tmp_path, family, grow):
    model, tok = chat_setup(family, grow)
    texts = [tok.apply_chat_template(c, tokenize=False) for c in CHAT]
    zoo.lora_train(model, tok, tmp_path, steps=1, texts=texts)
"""


def test_sft_after_a_resize_is_not_failed_by_resize_notices(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sft=SFT)
    result = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider", "--tokenguard-report", "r.json")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["tokenguard: * finding* in 3 guarded tests (TG140 x*); 0 allowed, 0 expected, * notices, 0 failing tests"]
    )
    strict = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-strict", "-p", "no:cacheprovider")
    strict.assert_outcomes(failed=3)
    strict.stdout.fnmatch_lines(["FAILED test_sft.py::test_sft_chat[[]smollm2-135m-instruct-0[]] (TG140)"])
