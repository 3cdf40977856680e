"""Trainer prediction against the installed Trainer, and the fix helpers, as properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import transformers
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from transformers import GenerationConfig, Trainer, TrainerCallback, TrainingArguments
from transformers.testing_utils import CaptureLogger

from pytest_tokenguard import (
    align_special_tokens,
    check_special_tokens,
    generation_config_for,
    predict_trainer_alignment,
    versions,
)
from pytest_tokenguard.guard.catalog import classify, parse_updated_tokens
from pytest_tokenguard.static.alignment import current_alignment
from pytest_tokenguard.static.layout import FIELDS, is_id, valid_ids
from pytest_tokenguard.static.objects import layout_from_objects
from pytest_tokenguard.suite import zoo
from pytest_tokenguard.suite.strategies import build_layout, special_token_layouts
from pytest_tokenguard.suite.support import APP_SAMPLING

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
TRAINER_ALIGNS = hasattr(transformers.trainer_utils, "align_special_tokens") or hasattr(Trainer, "_align_special_tokens")
SKIPS_NONE = versions.trainer_aligns() and not versions.trainer_writes_none()


class _StopAfterAlignment(Exception):
    pass


class _Stop(TrainerCallback):
    # Trainer.train() aligns special tokens first thing, then starts the loop; stopping at the first
    # callback keeps the real code path without training on ids the model may not embed.
    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        raise _StopAfterAlignment


def trainer_logged_updates(model: Any, tokenizer: Any, tmp_dir: str) -> dict[str, Any] | None:
    """The "Updated tokens" dict a real ``Trainer.train()`` logs (None when it logs no TG101)."""
    args = TrainingArguments(output_dir=tmp_dir, max_steps=1, report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = Trainer(
        model=model, args=args, train_dataset=[{"input_ids": [1, 2]}], processing_class=tokenizer, callbacks=[_Stop()]
    )
    with CaptureLogger(transformers.utils.logging.get_logger("transformers")) as captured:
        with pytest.raises(_StopAfterAlignment):
            trainer.train()
    updates = None
    for line in captured.out.splitlines():
        match = classify(line, 30)
        if match is not None and match.code == "TG101":
            updates = parse_updated_tokens(match.groups["updated"])
    return updates


@pytest.mark.skipif(not TRAINER_ALIGNS, reason="the installed Trainer does not align special tokens (< 4.56)")
@PROPERTY
@given(layout=special_token_layouts())
def test_prediction_equals_what_the_installed_trainer_logs(layout: dict[str, Any], tmp_path_factory: Any) -> None:
    model, tokenizer, _ = build_layout(layout)
    before = (model.config.to_dict(), copy.deepcopy(model.generation_config))
    predicted = predict_trainer_alignment(model, tokenizer)
    assert (model.config.to_dict(), model.generation_config) == before, "prediction must not mutate the model"
    logged = trainer_logged_updates(model, tokenizer, str(tmp_path_factory.getbasetemp()))
    assert predicted == (logged or {})


@pytest.mark.skipif(not SKIPS_NONE, reason="current_alignment is the >= 5.18 algorithm; the installed one differs")
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=special_token_layouts())
def test_pure_current_algorithm_equals_installed_one(layout: dict[str, Any]) -> None:
    model, tokenizer, _ = build_layout(layout)
    assert current_alignment(layout_from_objects(model, tokenizer)) == predict_trainer_alignment(model, tokenizer)


def _unfixable(report: Any, tokenizer_ids: dict[str, Any], rows: int, length: int) -> set[str]:
    """Errors alignment with the tokenizer cannot remove: the tokenizer is longer than the embedding
    matrix, or an out-of-range id sits in a field the tokenizer does not define."""
    # pad = eos = the only stop id (TG206 error) needs a dedicated pad token, which alignment does not invent
    pad_only_stop = {"TG206"} if any(f.code == "TG206" and f.severity == "error" for f in report.findings) else set()
    if length > rows:
        return {"TG204", "TG205"} | pad_only_stop
    out_of_range = any(f.code == "TG204" and tokenizer_ids.get(f.field) is None for f in report.findings)
    return ({"TG204"} if out_of_range else set()) | pad_only_stop


@PROPERTY
@given(layout=special_token_layouts())
# found by hypothesis: no generation config and a tokenizer eos the model cannot embed; align used to drop that
# eos from the model config when adding the end of turn (a TG201 of its own making)
@example(
    layout={
        "rows": 12,
        "tokenizer": {"bos": None, "eos": 12, "pad": None, "length": 13, "end_of_turn": 0},
        "model": {"bos": None, "eos": None, "pad": None},
        "generation": None,
    }
)
def test_after_align_no_errors_and_trainer_aligns_nothing(layout: dict[str, Any]) -> None:
    model, tokenizer, _ = build_layout(layout)
    before = {name: getattr(model.config, f"{name}_token_id") for name in FIELDS}
    changes = align_special_tokens(model, tokenizer)
    for where, (old, new) in changes.items():
        assert not (is_id(old) and new is None), f"{where}: an int id was replaced by None"
    report = check_special_tokens(model, tokenizer)
    errors = {f.code for f in report.errors}
    allowed = _unfixable(report, layout["tokenizer"], layout["rows"], layout["tokenizer"]["length"])
    assert errors <= allowed, str(report)
    if SKIPS_NONE:  # 4.56-5.17 write the tokenizer's None over config ids; nothing but None can stop that
        # the prediction is the installed Trainer's own answer (test_prediction_equals_what_the_installed_trainer_logs)
        assert predict_trainer_alignment(model, tokenizer) == {}
    for name, value in before.items():
        if is_id(value) and getattr(model.config, f"{name}_token_id") is None:
            pytest.fail(f"config {name} {value} became None")


@PROPERTY
@given(
    layout=special_token_layouts(),
    sampling=st.fixed_dictionaries(
        {}, optional={"max_new_tokens": st.integers(1, 50), "do_sample": st.booleans(), "top_k": st.integers(1, 50)}
    ),
)
def test_generation_config_for_checks_clean(layout: dict[str, Any], sampling: dict[str, Any]) -> None:
    model, tokenizer, _ = build_layout(layout)
    config = generation_config_for(model, tokenizer, **sampling)
    assert all(getattr(config, key) == value for key, value in sampling.items())
    report = check_special_tokens(model, tokenizer, config)
    assert not {"TG202", "TG203", "TG208", "TG209"} & set(report.codes()), str(report)


@pytest.mark.skipif(not SKIPS_NONE, reason="4.56-5.17 Trainers still write None over ids the tokenizer lacks")
def test_after_align_a_real_trainer_logs_nothing(tmp_path: Any) -> None:
    model, tokenizer = zoo.build("qwen3-0.6b")
    assert trainer_logged_updates(model, tokenizer, str(tmp_path / "raw")) == {"pad_token_id": 151643}
    model, tokenizer = zoo.build("qwen3-0.6b")
    align_special_tokens(model, tokenizer)
    assert trainer_logged_updates(model, tokenizer, str(tmp_path / "aligned")) is None


def test_generation_config_for_the_character_chat_app() -> None:
    model, tokenizer = zoo.build("qwen3-0.6b-base")
    sampling = APP_SAMPLING  # the character-chat app's sampling
    app = GenerationConfig(
        **sampling,
        bos_token_id=model.config.bos_token_id,
        pad_token_id=model.config.pad_token_id,
        eos_token_id=model.config.eos_token_id,
    )
    assert {"TG203", "TG208"} <= {f.code for f in check_special_tokens(model, tokenizer, app).errors}
    fixed = generation_config_for(model, tokenizer, **sampling)
    assert fixed.eos_token_id == [151643, 151645] and fixed.pad_token_id == 151643 and fixed.bos_token_id == 151643
    assert fixed.temperature == 0.8 and fixed.repetition_penalty == 1.05 and fixed.min_new_tokens == 5
    # generation is clean; what is left is the model config, which only align_special_tokens changes
    assert {(f.code, f.field) for f in check_special_tokens(model, tokenizer, fixed).errors} == {("TG201", "pad")}
    with pytest.raises(TypeError, match="pad_token_id"):
        generation_config_for(model, tokenizer, pad_token_id=0)


def test_align_qwen3_from_tokenizer_and_from_model() -> None:
    model, tokenizer = zoo.build("qwen3-0.6b")
    expected = (
        {"pad_token_id": 151643} if SKIPS_NONE else {"bos_token_id": None, "pad_token_id": 151643} if TRAINER_ALIGNS else {}
    )
    assert predict_trainer_alignment(model, tokenizer) == expected
    changes = align_special_tokens(model, tokenizer)
    assert changes == {"model_config.pad_token_id": (None, 151643)}
    assert model.config.bos_token_id == 151643, "the config bos the tokenizer does not define is kept"
    # 4.56-5.17 would still write the tokenizer's None over bos: only None could prevent that
    assert predict_trainer_alignment(model, tokenizer) == ({} if SKIPS_NONE or not TRAINER_ALIGNS else {"bos_token_id": None})

    model, tokenizer = zoo.build("qwen3-0.6b")
    changes = align_special_tokens(model, tokenizer, source="model")
    assert changes["tokenizer.bos_token"] == (None, "<|endoftext|>") and tokenizer.bos_token_id == 151643
    assert model.config.pad_token_id == 151643  # pad then follows the tokenizer, which defines it
    assert not check_special_tokens(model, tokenizer).errors
    with pytest.raises(ValueError, match="source"):
        align_special_tokens(model, tokenizer, source="config")


def test_align_adds_end_of_turn_and_keeps_stop_ids() -> None:
    model, tokenizer = zoo.build("qwen3-0.6b-base")
    align_special_tokens(model, tokenizer)
    assert valid_ids(model.generation_config.eos_token_id) == [151643, 151645]
    assert check_special_tokens(model, tokenizer).ok


def test_prediction_through_peft_and_without_generation_config() -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = zoo.build("tinyllama-1.1b-chat-v1.0")
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert predict_trainer_alignment(peft_model, tokenizer) == ({"pad_token_id": 2} if TRAINER_ALIGNS else {})
    assert predict_trainer_alignment(model, None) == {}
