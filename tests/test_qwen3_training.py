"""Acceptance: LoRA-training a tiny model with Qwen3-0.6B's exact special tokens under --tokenguard."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")
transformers_module = pytest.importorskip("transformers")
# Imported here so pytester's in-process runs find them loaded (re-importing torch modules crashes).
import peft  # noqa: E402,F401
import transformers.trainer  # noqa: E402,F401

from pytest_tokenguard import versions  # noqa: E402
from pytest_tokenguard.suite import zoo  # noqa: E402

TF = transformers_module.__version__
ALIGNS = versions.trainer_aligns()
KEEPS_NONE = ALIGNS and not versions.trainer_writes_none()

TRAIN = """
import threading
from transformers.utils import logging as hf_logging
from pytest_tokenguard.suite import zoo


def train(tmp_path, aligned=False):
    model, tokenizer = zoo.build("qwen3-0.6b")
    if aligned:
        model.config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    zoo.lora_train(model, tokenizer, tmp_path, steps=2)


def test_raw(tmp_path):
    train(tmp_path)


def test_raw_second_in_run(tmp_path):
    train(tmp_path)


def test_raw_verbosity_error(tmp_path):
    hf_logging.set_verbosity_error()
    try:
        train(tmp_path)
    finally:
        hf_logging.set_verbosity_warning()


def test_raw_in_worker_thread(tmp_path):
    errors = []
    def work():
        try:
            train(tmp_path)
        except BaseException as exc:
            errors.append(exc)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors


def test_aligned(tmp_path):
    train(tmp_path, aligned=True)
"""


def test_layout_is_exact() -> None:
    model, tokenizer = zoo.build("qwen3-0.6b")
    assert (model.config.vocab_size, model.config.bos_token_id, model.config.eos_token_id) == (151936, 151643, 151645)
    assert model.config.pad_token_id is None
    assert len(tokenizer) == 151669
    assert tokenizer.bos_token is None
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 151645)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 151643)
    assert model.get_input_embeddings().weight.shape[0] == 151936


@pytest.mark.skipif(not ALIGNS, reason=f"transformers {TF} has no Trainer special-token alignment (added in 4.56)")
def test_qwen3_lora_training_is_caught(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_train=TRAIN)
    result = pytester.runpytest("--tokenguard", "-p", "no:cacheprovider")
    out = result.stdout.str()
    for name in ("test_raw", "test_raw_second_in_run", "test_raw_verbosity_error", "test_raw_in_worker_thread"):
        assert f"FAILED test_train.py::{name} (TG101)" in out
    assert out.count("model.config.pad_token_id = tokenizer.pad_token_id  # 151643") >= 4
    # 4.56-5.17 also write the tokenizer's None over the config bos
    updated = "{'pad_token_id': 151643}" if KEEPS_NONE else "{'bos_token_id': None, 'pad_token_id': 151643}"
    assert f"  updated tokens: {updated}" in out
    if KEEPS_NONE:
        # Aligning the config pad is the whole fix on transformers >= 5.18.
        result.assert_outcomes(failed=4, passed=1)
    else:
        # 4.56 .. 5.17 still report the tokenizer's missing bos as an update, rightly failing.
        result.assert_outcomes(failed=5)
        assert "FAILED test_train.py::test_aligned (TG101)" in out
        assert "'bos_token_id': None" in out
