"""Real cases about what the model sees, at the calls (``--tokenguard-calls``): the batches that reach
``Trainer.training_step`` and ``generate()``. Data: tests/data/cases (copied from the public reproductions)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("peft")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules in one process crashes, so everything the generated tests import is imported here first.
import peft  # noqa: F401
import torch
import transformers.trainer  # noqa: F401
from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from pytest_tokenguard.suite import zoo

pytest_plugins = ("pytester",)

CASES = Path(__file__).parent / "data" / "cases"

BUILD = f'''
import torch
from transformers import AutoTokenizer, GenerationConfig, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

CASES = {str(CASES)!r}
CHAT = [{{"role": "user", "content": "hello"}}, {{"role": "assistant", "content": "hi there"}}]

def double_bos():
    """DeepSeek-R1-Distill layout: the template writes bos, the tokenizer's post-processor adds another."""
    tok = AutoTokenizer.from_pretrained(CASES + "/double-bos")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=151665, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=151643,
                                         eos_token_id=151643, tie_word_embeddings=True))
    model.generation_config = GenerationConfig(bos_token_id=151646, eos_token_id=151643)
    return model, tok

def eos_appended():
    """Mistral-Instruct layout with add_eos_token: every encoded prompt ends with </s>."""
    tok = AutoTokenizer.from_pretrained(CASES + "/eos-appended-to-prompts")
    tok.pad_token, tok.padding_side = tok.unk_token, "left"  # left padding: only the appended eos is wrong
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=32000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1, head_dim=8, bos_token_id=1,
                                             eos_token_id=2, pad_token_id=0))
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return model, tok
'''


@pytest.fixture(scope="module", autouse=True)
def _modules_loaded_outside_pytester(tmp_path_factory: pytest.TempPathFactory) -> None:
    AutoTokenizer.from_pretrained(CASES / "double-bos")
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
        )
    )
    model = MistralForCausalLM(
        MistralConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
        )
    )
    model.generate(torch.tensor([[1, 5]]), attention_mask=torch.ones(1, 2, dtype=torch.long), max_new_tokens=1)
    model, tokenizer = zoo.build("smollm2-135m-instruct")
    zoo.lora_train(model, tokenizer, tmp_path_factory.mktemp("warm"), steps=1)


def test_double_bos_training_fails_even_after_align(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tg_build=BUILD)
    pytester.makepyfile(
        test_sft="""
        from pytest_tokenguard import align_special_tokens
        from pytest_tokenguard.suite import zoo
        from tg_build import CHAT, double_bos

        def test_render_then_tokenize_then_train(tmp_path):
            model, tok = double_bos()
            align_special_tokens(model, tok)
            text = tok.apply_chat_template(CHAT, tokenize=False)
            zoo.lora_train(model, tok, tmp_path, steps=1, texts=[text, text])
        """
    )
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG301 doubled BOS at a sequence start",
            "  message: rows [[]0, 1[]] start with bos 151646 '<\uff5cbegin\u2581of\u2581sentence\uff5c>' twice * "
            "[[]at *Trainer.training_step() batch 1[]]",
        ]
    )


def test_eos_appended_prompts_fail_at_generate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tg_build=BUILD)
    pytester.makepyfile(
        test_serve="""
        from tg_build import eos_appended

        def test_generate_from_inst_prompts():
            model, tok = eos_appended()
            batch = tok(["[INST]What is the capital of Taiwan[/INST]", "[INST]Where was the CEO born?[/INST]"],
                        return_tensors="pt", padding=True, return_token_type_ids=False)
            model.generate(**batch, max_new_tokens=2, do_sample=False)

        def test_without_the_appended_eos():
            model, tok = eos_appended()
            batch = tok(["[INST]What is the capital of Taiwan[/INST]"], return_tensors="pt", add_special_tokens=False,
                        return_token_type_ids=False)
            model.generate(**batch, max_new_tokens=2, do_sample=False)
        """
    )
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "TG302 a generation prompt ends in eos or the chat end of turn",
            "  message: rows [[]0, 1[]] end in eos 2 (row 0 at position *; row 1 at position *): generation starts after "
            "the end of a sequence [[]at generate()[]]",
            "FAILED test_serve.py::test_generate_from_inst_prompts (TG302)",
        ]
    )


SFT = """
from pytest_tokenguard.suite import zoo

CHAT = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        [{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue."}]]

def test_sft_chat(tmp_path):
    model, tok = zoo.build("smollm2-135m-instruct")   # pad = eos = <|im_end|>, the chat end of turn
    model.resize_token_embeddings(len(tok))           # changes nothing: the TG140 notice
    texts = [tok.apply_chat_template(c, tokenize=False) for c in CHAT]
    zoo.lora_train(model, tok, tmp_path, steps=1, texts=texts)

def test_sft_chat_with_a_dedicated_pad(tmp_path):
    model, tok = zoo.build("smollm2-135m-instruct")
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    model.resize_token_embeddings(len(tok), pad_to_multiple_of=64, mean_resizing=False)
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    texts = [tok.apply_chat_template(c, tokenize=False) for c in CHAT]
    zoo.lora_train(model, tok, tmp_path, steps=1, texts=texts)
"""


def test_pad_eos_end_of_turn_same_fails_on_the_masked_eos_not_on_tg140(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sft=SFT)
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "TG303 every eos / end-of-turn position is masked in the labels",
            "  message: all * eos / end-of-turn positions of the batch (eos 2 '<|im_end|>') are -100 in labels *",
            # the same fault statically at Trainer.train() (pad = eos = end of turn, the only stop id); TG140 is a notice
            "tokenguard: 3 findings in 2 guarded tests (TG140 x1, TG206 x1, TG303 x1); 0 allowed, 0 expected, 1 notice, "
            "1 failing test",
            "FAILED test_sft.py::test_sft_chat (TG206, TG303)",
        ]
    )
