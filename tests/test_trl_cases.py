"""TG102 without trl: the catalog entry, the ``__init__`` wrapper and its installation, on stand-in trainers."""

from __future__ import annotations

import importlib
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pytest_tokenguard.guard import calls, routing
from pytest_tokenguard.guard import trl as trl_checks
from pytest_tokenguard.guard.catalog import BY_CODE, RUNTIME_CODES, SEVERITIES, classify, exists_in
from pytest_tokenguard.guard.findings import TestRecorder, format_findings

transformers_trainer = pytest.importorskip("transformers.trainer")

MESSAGE = "SFTTrainer.__init__ rewrote special tokens: {'pad_token_id': 151643}"


def test_tg102_is_a_fault_in_the_catalog() -> None:
    assert "TG102" in RUNTIME_CODES
    entry = BY_CODE["TG102"]
    assert entry.title == "trl trainer rewrote special tokens"
    assert (entry.channel, entry.first, entry.last) == ("log", "4.56.2", None)
    assert SEVERITIES["TG102"][0] == "fault"
    assert exists_in(entry, "4.57.6") and exists_in(entry, "5.24.0") and not exists_in(entry, "4.53.3")


def test_the_recorded_message_classifies_as_tg102() -> None:
    assert trl_checks.MESSAGE.format(trainer="SFTTrainer", updated={"pad_token_id": 151643}) == MESSAGE
    match = classify(MESSAGE, logging.WARNING)
    assert match is not None and match.code == "TG102"
    assert match.groups == {"trainer": "SFTTrainer", "updated": "{'pad_token_id': 151643}"}
    assert classify("SFTTrainer rewrote the chat template", logging.WARNING) is None


def _model(pad: int | None = None, eos: Any = 2) -> Any:
    return SimpleNamespace(
        config=SimpleNamespace(bos_token_id=1, eos_token_id=eos, pad_token_id=pad),
        generation_config=SimpleNamespace(bos_token_id=1, eos_token_id=[2, 3], pad_token_id=pad),
    )


class _Tokenizer:
    pad_token_id = 0
    eos_token_id = 2


def _trl_like_init(self: Any, model: Any, args: Any = None, processing_class: Any = None, **kwargs: Any) -> None:
    """What trl >= 1.13 does in ``__init__``: mirror the tokenizer's pad onto both configs, silently."""
    model.config.pad_token_id = processing_class.pad_token_id
    model.generation_config.pad_token_id = processing_class.pad_token_id
    self.model = model


def _fake_module(name: str = "trl.trainer.tg_fake_trainer") -> types.ModuleType:
    """A trl trainer module: a ``transformers.Trainer`` subclass with its own ``__init__`` (never calling
    ``Trainer.__init__``), a subclass of it and a class that is not a trainer."""
    module = types.ModuleType(name)
    base = type("FakeSFTTrainer", (transformers_trainer.Trainer,), {"__init__": _trl_like_init, "__module__": name})

    def child_init(self: Any, *args: Any, **kwargs: Any) -> None:
        cast(Any, base).__init__(self, *args, **kwargs)  # super().__init__: the (wrapped) base class's one

    child = type("FakeChildTrainer", (base,), {"__init__": child_init, "__module__": name})
    vars(module).update(
        FakeSFTTrainer=base,
        FakeChildTrainer=child,
        NotATrainer=type("NotATrainer", (), {"__init__": _trl_like_init, "__module__": name}),
        Trainer=transformers_trainer.Trainer,  # imported there, not defined there
    )
    return module


@pytest.fixture
def fake_trl(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = _fake_module()
    monkeypatch.setitem(sys.modules, "trl", sys.modules.get("trl") or types.ModuleType("trl"))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


@pytest.fixture
def guarded() -> Iterator[TestRecorder]:
    recorder = TestRecorder({})
    with routing.guarding(recorder, calls.Options(synthesize="never")):
        yield recorder


def test_trainer_classes_are_the_trainer_subclasses_the_module_defines(fake_trl: types.ModuleType) -> None:
    assert {cls.__name__ for cls in trl_checks.trainer_classes(fake_trl)} == {"FakeSFTTrainer", "FakeChildTrainer"}


def _outer_guard() -> bool:
    """Whether a session around this test holds the wrappers (a guarded test of this run attached the guard
    for the rest of the run): they then stay when the sessions of the test end (reference counting)."""
    return bool(calls._installation.users)


def test_the_scan_wraps_an_already_imported_module_and_release_restores_it(fake_trl: types.ModuleType) -> None:
    original = fake_trl.FakeSFTTrainer.__dict__["__init__"]
    outer_guard = _outer_guard()
    recorder = TestRecorder({})
    outer = routing.GuardState(calls.Options(synthesize="never"))
    inner = routing.GuardState(calls.Options(synthesize="never"))
    routing.enter(outer)
    try:
        assert {"FakeChildTrainer", "FakeSFTTrainer"} <= set(calls.installed_trl_wrappers())  # + real trl's, if imported
        assert fake_trl.FakeSFTTrainer.__dict__["__init__"].__tokenguard_original__ is original
        assert "__tokenguard_original__" not in vars(fake_trl.NotATrainer.__init__)
        routing.enter(inner)  # a nested session: reference-counted, nothing wrapped twice
        routing.leave(inner)
        assert {"FakeChildTrainer", "FakeSFTTrainer"} <= set(calls.installed_trl_wrappers())  # + real trl's, if imported
        routing.receive(outer, recorder)
        fake_trl.FakeSFTTrainer(_model(), processing_class=_Tokenizer())
    finally:
        routing.leave(outer)
    if outer_guard:
        assert fake_trl.FakeSFTTrainer.__dict__["__init__"].__tokenguard_original__ is original
    else:
        assert fake_trl.FakeSFTTrainer.__dict__["__init__"] is original
        assert calls.installed_trl_wrappers() == []
    assert [f.message for f in recorder.findings] == ["FakeSFTTrainer.__init__ rewrote special tokens: {'pad_token_id': 0}"]


def test_finding_names_the_outermost_trainer_once_with_details(fake_trl: types.ModuleType, guarded: TestRecorder) -> None:
    model = _model()
    trainer = fake_trl.FakeChildTrainer(model=model, processing_class=_Tokenizer())
    assert trainer.model is model and model.config.pad_token_id == 0  # the original __init__ ran
    (finding,) = guarded.findings
    assert finding.code == "TG102"
    assert finding.message == "FakeChildTrainer.__init__ rewrote special tokens: {'pad_token_id': 0}"
    assert finding.details == {"updated_tokens": {"pad_token_id": 0}, "trainer": "FakeChildTrainer"}
    assert (finding.logger, finding.channel, finding.level, finding.severity) == (
        "pytest_tokenguard.trl",
        "synthesized",
        "WARNING",
        "fault",
    )
    assert finding.failing
    text = format_findings([finding])
    assert "TG102 trl trainer rewrote special tokens" in text
    assert "  logger:  pytest_tokenguard.trl (synthesized, WARNING)" in text


def test_an_aligned_model_gives_no_finding(fake_trl: types.ModuleType, guarded: TestRecorder) -> None:
    fake_trl.FakeSFTTrainer(_model(pad=0), processing_class=_Tokenizer())
    assert guarded.findings == []


def test_the_generation_config_alone_counts_and_peft_models_are_unwrapped(
    fake_trl: types.ModuleType, guarded: TestRecorder
) -> None:
    base = _model(pad=0)
    base.generation_config.pad_token_id = None
    peft_like = SimpleNamespace(peft_config={}, get_base_model=lambda: base)
    # the config and generation config are the base model's: trl writes through the peft model to them
    peft_like.config, peft_like.generation_config = base.config, base.generation_config
    fake_trl.FakeSFTTrainer(peft_like, processing_class=_Tokenizer())
    assert [f.details["updated_tokens"] for f in guarded.findings] == [{"pad_token_id": 0}]


def test_expect_and_allow_cover_tg102(fake_trl: types.ModuleType, guarded: TestRecorder) -> None:
    with guarded.expecting(["TG102"]) as scope:
        fake_trl.FakeSFTTrainer(_model(), processing_class=_Tokenizer())
    assert scope.seen == {"TG102"} and guarded.findings[0].expected and not guarded.findings[0].failing
    guarded.begin({"TG102": "test_x::TG102"}, "call")
    fake_trl.FakeSFTTrainer(_model(), processing_class=_Tokenizer())
    assert guarded.findings[0].allowed and not guarded.findings[0].failing


class _Uncomparable:
    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")

    __hash__ = object.__hash__


def test_the_check_never_breaks_the_trainer(fake_trl: types.ModuleType, guarded: TestRecorder) -> None:
    model = _model(eos=_Uncomparable())  # comparing the ids raises inside the check: swallowed
    trainer = fake_trl.FakeSFTTrainer(model, processing_class=_Tokenizer())
    assert trainer.model is model and model.config.pad_token_id == 0

    class Exploding:
        @property
        def config(self) -> Any:
            raise RuntimeError("no config today")

    with pytest.raises(RuntimeError, match="no config today"):  # the trainer's own error, unchanged
        fake_trl.FakeSFTTrainer(Exploding(), processing_class=_Tokenizer())
    assert guarded.findings == []
    assert trl_checks.snapshot("Qwen/Qwen3-0.6B") is None  # a hub id: trl loads it, nothing to compare


def test_nothing_is_recorded_while_no_test_runs(fake_trl: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = TestRecorder({})
    with routing.guarding(recorder, calls.Options(synthesize="never")):
        assert "FakeSFTTrainer" in calls.installed_trl_wrappers()
        with monkeypatch.context() as between_tests:
            between_tests.setattr(routing, "current", None)  # attached, but no test is running
            model = _model()
            fake_trl.FakeSFTTrainer(model, processing_class=_Tokenizer())
        assert model.config.pad_token_id == 0
    assert recorder.findings == []


def test_a_module_imported_while_the_guard_is_on_is_wrapped_at_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a real import through the finder (sys.meta_path), as trl's lazy module does on `trl.SFTTrainer`
    package = tmp_path / "trl_stub_root"
    (package / "trl" / "trainer").mkdir(parents=True)
    (package / "trl" / "__init__.py").write_text("")
    (package / "trl" / "trainer" / "__init__.py").write_text("")
    (package / "trl" / "trainer" / "tg_stub_trainer.py").write_text(
        "import transformers.trainer\n\n"
        "class StubTrainer(transformers.trainer.Trainer):\n"
        "    def __init__(self, model, processing_class=None):\n"
        "        model.config.pad_token_id = processing_class.pad_token_id\n"
    )
    for name in [name for name in sys.modules if name == "trl" or name.startswith("trl.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(package))
    recorder = TestRecorder({})
    outer_guard = _outer_guard()
    with routing.guarding(recorder, calls.Options(synthesize="never")):
        stub = importlib.import_module("trl.trainer.tg_stub_trainer")
        assert "StubTrainer" in calls.installed_trl_wrappers()
        stub.StubTrainer(_model(), processing_class=_Tokenizer())
    assert ("__tokenguard_original__" in vars(stub.StubTrainer.__init__)) is outer_guard
    assert [f.details for f in recorder.findings] == [{"updated_tokens": {"pad_token_id": 0}, "trainer": "StubTrainer"}]
    for name in [name for name in sys.modules if name == "trl" or name.startswith("trl.")]:
        del sys.modules[name]  # the stub must not outlive this test (monkeypatch restores the real trl)
