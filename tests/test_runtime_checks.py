"""The generate()/Trainer wrappers' building blocks, without pytest running them."""

from __future__ import annotations

from typing import Any

import pytest
from packaging.version import Version
from transformers import GenerationConfig

from pytest_tokenguard import versions
from pytest_tokenguard.guard import calls as runtime_checks
from pytest_tokenguard.static.layout import TOKEN_ID_ATTRIBUTES
from pytest_tokenguard.suite import zoo

TOKENS = TOKEN_ID_ATTRIBUTES


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
    # the cached answer is still the installed truth, and a copy (mutating it changes nothing for the next call)
    got.pad_token_id = "mutated"
    again = runtime_checks.effective_token_ids(qwen3, args, dict(token_kwargs))
    assert ids(again) == installed_truth(qwen3, GenerationConfig(**passed) if passed is not None else None, **token_kwargs)


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


def test_version_facts() -> None:
    assert versions.parse("5.0.0rc1") == versions.parse("5.0.0") == Version("5.0")
    assert versions.trainer_aligns("4.55.4") is False and versions.trainer_aligns("4.56.0") is True
    assert versions.trainer_aligns("4.56.0rc1") is True  # a release candidate counts as its release
    assert [versions.trainer_writes_none(v) for v in ("4.55.4", "4.56.0", "5.17.0", "5.18.0")] == [False, True, True, False]
    assert versions.in_range("5.12.1", "4.40.0", "5.12.1") and not versions.in_range("5.13", "4.40.0", "5.12.1")
    with pytest.raises(ValueError):
        versions.parse("not a version")


def test_installed_version_is_read_from_metadata() -> None:
    import transformers

    assert versions.transformers() == versions.parse(transformers.__version__)
    assert versions.installed("no-such-package-tokenguard") is None
    assert versions.trainer_aligns() is (versions.parse(transformers.__version__) >= Version("4.56"))


def test_trainer_check_ignores_processing_classes_without_a_tokenizer(qwen3: Any) -> None:
    from pytest_tokenguard.guard.findings import TestRecorder

    class ImageProcessor:  # no tokenizer, no len(): the Trainer does not align anything here either
        pass

    class FakeTrainer:
        model = qwen3
        processing_class = ImageProcessor()

    recorder = TestRecorder()
    runtime_checks._check_train(recorder, runtime_checks.Options(synthesize="always", calls=True), FakeTrainer(), (), {})
    assert recorder.findings == []


@pytest.mark.parametrize("args", [("--tokenguard",), ("--tokenguard", "--tokenguard-calls")], ids=["plain", "calls"])
def test_trainer_as_the_first_transformers_import(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    """``from transformers import Trainer`` first, in a fresh process: transformers.generation.utils finishes
    while transformers.trainer is still executing; the call wrappers wait for the Trainer class instead of
    breaking the import (a regression: "partially initialized module 'transformers.trainer'")."""
    pytester.makepyfile(
        test_first="""
        from transformers import Trainer

        def test_wrapped():
            wrapped = hasattr(Trainer.train, "__tokenguard_original__")
            assert wrapped == (TRAIN_WRAPPED)
        """.replace("TRAIN_WRAPPED", "True" if "--tokenguard-calls" in args or not versions.trainer_aligns() else "False")
    )
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
