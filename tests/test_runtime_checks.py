"""The generate()/Trainer wrappers' building blocks, without pytest running them."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import GenerationConfig

from pytest_tokenguard import runtime_checks, zoo

TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id")


def installed_truth(model: Any, passed: Any, **token_kwargs: Any) -> tuple[Any, ...]:
    config, _ = model._prepare_generation_config(passed, **token_kwargs)
    return tuple(getattr(config, key) for key in TOKENS)


def ids(namespace: Any) -> tuple[Any, ...]:
    return tuple(getattr(namespace, key) for key in TOKENS)


@pytest.fixture(scope="module")
def qwen3() -> Any:
    return zoo.build("qwen3-0.6b")[0]


@pytest.mark.parametrize(
    ("passed", "token_kwargs"),
    [
        (None, {}),
        (None, {"pad_token_id": 7}),
        ({"max_new_tokens": 5}, {}),  # the character-chat app's shape: ids left unset
        ({"bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": None}, {}),
        ({"eos_token_id": [1, 2]}, {"eos_token_id": 3}),
    ],
)
def test_effective_ids_equal_the_installed_preparation(qwen3: Any, passed: Any, token_kwargs: dict[str, Any]) -> None:
    config = GenerationConfig(**passed) if passed is not None else None
    args = (None, config) if config is not None else ()
    got = runtime_checks.effective_token_ids(qwen3, args, dict(token_kwargs))
    assert ids(got) == installed_truth(qwen3, GenerationConfig(**passed) if passed is not None else None, **token_kwargs)
    # cached answer: same again, and a copy (mutating it changes nothing for the next call)
    got.pad_token_id = "mutated"
    assert ids(runtime_checks.effective_token_ids(qwen3, args, dict(token_kwargs))) == ids(
        runtime_checks.effective_token_ids(qwen3, args, dict(token_kwargs)))
    assert runtime_checks.effective_token_ids(qwen3, args, dict(token_kwargs)).pad_token_id != "mutated"


def test_a_changed_config_is_not_answered_from_the_cache(qwen3: Any) -> None:
    config = GenerationConfig(max_new_tokens=3, pad_token_id=1)
    assert runtime_checks.effective_token_ids(qwen3, (), {"generation_config": config}).pad_token_id == 1
    config.pad_token_id = 2
    assert runtime_checks.effective_token_ids(qwen3, (), {"generation_config": config}).pad_token_id == 2
    model_config = qwen3.generation_config
    old = model_config.bos_token_id
    try:
        model_config.bos_token_id = 5
        assert runtime_checks.effective_token_ids(qwen3, (), {}).bos_token_id == 5
    finally:
        model_config.bos_token_id = old


def test_version_parsing() -> None:
    assert runtime_checks.version_tuple("4.56.0") == (4, 56)
    assert runtime_checks.version_tuple("5.0.0rc1") == (5, 0)
    assert runtime_checks.trainer_aligns("4.55.4") is False and runtime_checks.trainer_aligns("4.56.0") is True
    assert runtime_checks.trainer_aligns(None) is True  # unknown: trust the installed Trainer, synthesize nothing


def test_trainer_check_ignores_processing_classes_without_a_tokenizer(qwen3: Any) -> None:
    from pytest_tokenguard.findings import TestRecorder

    class ImageProcessor:  # no tokenizer, no len(): the Trainer does not align anything here either
        pass

    class FakeTrainer:
        model = qwen3
        processing_class = ImageProcessor()

    recorder = TestRecorder()
    runtime_checks.configure(runtime_checks.Options(synthesize="always", calls=True))
    try:
        runtime_checks._check_train(recorder, FakeTrainer(), (), {})
    finally:
        runtime_checks.configure(runtime_checks.Options())
    assert recorder.findings == []
