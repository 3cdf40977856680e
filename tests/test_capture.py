"""The capture layer on its own: it sees everything and changes nothing that logging does."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")
from transformers.testing_utils import CaptureLogger  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from pytest_tokenguard.guard import capture  # noqa: E402

TG112 = (
    "The attention mask is not set and cannot be inferred from input because pad token is same as eos token. As a "
    "consequence, you may observe unexpected behavior. Please pass your input's `attention_mask` to obtain reliable "
    "results."
)


@pytest.fixture
def seen() -> Iterator[list[tuple[str, int, str, str]]]:
    observed: list[tuple[str, int, str, str]] = []
    capture.attach()
    capture.set_sink(lambda *item: observed.append(item))
    try:
        yield observed
    finally:
        capture.detach()


@pytest.fixture
def verbosity() -> Iterator[None]:
    before = hf_logging.get_verbosity()
    yield
    hf_logging.set_verbosity(before)


def _emit_from_here(logger: Any, message: str) -> int:
    line = _line() + 1
    logger.warning(message)
    return line


def _line() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_detach_restores_classes_manager_and_warn() -> None:
    logger = logging.getLogger("transformers.generation.utils")
    before = (type(logger), logging.Logger.manager.loggerClass, warnings.warn)
    capture.attach()
    assert isinstance(logger, capture.GuardedLogger)
    assert warnings.warn is not before[2]
    capture.detach()
    assert (type(logger), logging.Logger.manager.loggerClass, warnings.warn) == before


def test_unwatched_loggers_are_untouched(seen: list[tuple[str, int, str, str]]) -> None:
    other = logging.getLogger("somelib.tokens")
    assert type(other) is logging.Logger
    other.warning("pad_token_id is wrong")
    assert seen == []


def test_loggers_created_after_attach_are_guarded(seen: list[tuple[str, int, str, str]]) -> None:
    late = logging.getLogger("transformers.tokenguard_test_late_module")
    cb = logging.getLogger("ContinuousBatchingLogger")
    assert isinstance(late, capture.GuardedLogger) and isinstance(cb, capture.GuardedLogger)
    cb.warning("`eos_token_id` not set in GenerationConfig. Setting to -1 (disabled).")
    assert seen[-1][0] == "ContinuousBatchingLogger"


@pytest.mark.usefixtures("verbosity")
def test_verbosity_error_hides_output_but_not_the_record(seen: list[tuple[str, int, str, str]]) -> None:
    logger = hf_logging.get_logger("transformers.generation.utils")
    hf_logging.set_verbosity_error()
    with CaptureLogger(logger) as cl:
        logger.warning(TG112)
    assert cl.out == ""
    assert seen == [("transformers.generation.utils", logging.WARNING, TG112, "log")]
    assert logger.getEffectiveLevel() == logging.ERROR
    assert not logger.isEnabledFor(logging.WARNING)


@pytest.mark.usefixtures("verbosity")
def test_output_identical_with_and_without_guard() -> None:
    logger = hf_logging.get_logger("transformers.generation.utils")

    def run() -> list[str]:
        outputs = []
        for level in (hf_logging.set_verbosity_warning, hf_logging.set_verbosity_error, hf_logging.set_verbosity_info):
            level()
            with CaptureLogger(logger) as cl:
                logger.warning("pad %s", "token")
                logger.info("info %d", 1)
                logger.error("err")
            outputs.append(cl.out)
        return outputs

    plain = run()
    capture.attach()
    capture.set_sink(lambda *item: None)
    try:
        guarded = run()
    finally:
        capture.detach()
    assert guarded == plain
    assert plain[0] == "pad token\nerr\n" and plain[1] == "err\n"


@pytest.mark.usefixtures("verbosity")
def test_caller_information_is_unchanged() -> None:
    logger = hf_logging.get_logger("transformers.generation.utils")
    keep = _Keep()
    logger.addHandler(keep)
    try:
        plain_line = _emit_from_here(logger, "x")
        capture.attach()
        capture.set_sink(lambda *item: None)
        try:
            guarded_line = _emit_from_here(logger, "x")
        finally:
            capture.detach()
    finally:
        logger.removeHandler(keep)
    plain, guarded = keep.records
    assert (plain.funcName, plain.lineno, plain.pathname) == ("_emit_from_here", plain_line, __file__)
    assert (guarded.funcName, guarded.lineno, guarded.pathname) == ("_emit_from_here", guarded_line, __file__)


def test_warning_once_is_seen_every_time_but_printed_once(seen: list[tuple[str, int, str, str]]) -> None:
    logger = hf_logging.get_logger("transformers.generation.utils")
    message = TG112 + " tokenguard-once-test"
    with CaptureLogger(logger) as cl:
        logger.warning_once(message)
        logger.warning_once(message)
    assert cl.out == message + "\n"
    assert [m for (_, _, m, _) in seen] == [message, message]
    # transformers' own cache handle still works through a guarded logger
    once: Any = logger.warning_once  # an lru_cache in transformers, whatever its stub says
    assert once.cache_info().hits >= 1
    once.cache_clear()


def test_logging_disable_and_disabled_flag_do_not_hide(seen: list[tuple[str, int, str, str]]) -> None:
    logger = hf_logging.get_logger("transformers.generation.utils")
    logging.disable(logging.CRITICAL)
    try:
        logger.warning("pad token one")
    finally:
        logging.disable(logging.NOTSET)
    logger.disabled = True
    try:
        logger.warning("pad token two")
    finally:
        logger.disabled = False
    assert [m for (_, _, m, _) in seen] == ["pad token one", "pad token two"]


def test_records_from_threads(seen: list[tuple[str, int, str, str]]) -> None:
    logger = hf_logging.get_logger("transformers.trainer_utils")
    thread = threading.Thread(target=logger.warning, args=("pad token from a thread",))
    thread.start()
    thread.join()
    assert seen[-1][2] == "pad token from a thread"


def test_python_warnings_from_transformers_modules(seen: list[tuple[str, int, str, str]]) -> None:
    namespace = {"__name__": "transformers.generation.configuration_utils", "warnings": warnings}
    exec("def emit():\n    warnings.warn('`pad_token_id` should be positive but got -1.', UserWarning)\n", namespace)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace["emit"]()  # type: ignore[operator]
        warnings.warn("pad token from user code", UserWarning, stacklevel=1)
    assert [m for (_, _, m, c) in seen if c == "warnings"] == ["`pad_token_id` should be positive but got -1."]
    # attribution of the warning itself is unchanged: the emitting line, not our wrapper
    assert caught[0].filename == "<string>" and caught[1].filename == __file__


def test_sink_none_is_pass_through() -> None:
    logger = hf_logging.get_logger("transformers.generation.utils")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    capture.attach()
    try:
        logger.warning("plain")
    finally:
        capture.detach()
        logger.removeHandler(handler)
    assert stream.getvalue() == "plain\n"


# --- trl: trl.* loggers, accelerate's MultiProcessAdapter (log, warning_once), warnings from trl modules ----

TG160 = (
    "The chat template does not include the assistant turn's end-of-turn token in the loss mask; the model may not learn to stop."
)


@pytest.fixture
def trl_logger() -> Iterator[Any]:
    """``trl.trainer.sft_trainer.logger`` (accelerate's adapter) with accelerate's state created and a handler."""
    pytest.importorskip("trl")
    accelerate = pytest.importorskip("accelerate")
    from trl.trainer import sft_trainer

    if not isinstance(getattr(sft_trainer, "logger", None), pytest.importorskip("accelerate.logging").MultiProcessAdapter):
        pytest.skip("this trl's sft_trainer logs through no accelerate adapter")
    accelerate.PartialState()
    keep = _Keep()
    sft_trainer.logger.logger.addHandler(keep)
    try:
        yield sft_trainer.logger
    finally:
        sft_trainer.logger.logger.removeHandler(keep)


def _kept(adapter: Any) -> list[logging.LogRecord]:
    return next(h for h in adapter.logger.handlers if isinstance(h, _Keep)).records


def _adapter_methods() -> tuple[Any, Any]:
    MultiProcessAdapter = pytest.importorskip("accelerate.logging").MultiProcessAdapter
    return MultiProcessAdapter.__dict__.get("log"), MultiProcessAdapter.__dict__.get("warning_once")


def test_trl_loggers_and_accelerate_adapter_are_guarded_then_restored(trl_logger: Any) -> None:
    before = (type(trl_logger.logger), _adapter_methods(), warnings.warn)
    capture.attach()
    try:
        assert isinstance(trl_logger.logger, capture.GuardedLogger)
        assert _adapter_methods() == (capture._adapter_log, capture._adapter_warning_once)
    finally:
        capture.detach()
    assert (type(trl_logger.logger), _adapter_methods(), warnings.warn) == before


def test_adapter_records_seen_with_the_rank_prefix_and_caller_unchanged(trl_logger: Any) -> None:
    def emit() -> int:
        line = _line() + 1
        trl_logger.warning("pad %s", "token")
        return line

    plain_line = emit()
    seen: list[tuple[str, int, str, str]] = []
    capture.attach()
    capture.set_sink(lambda *item: seen.append(item))
    try:
        guarded_line = emit()
        trl_logger.warning_once(TG160 + " caller")
    finally:
        capture.detach()
    trl_logger.warning_once(TG160 + " caller")  # cached: nothing more
    plain, guarded, once = _kept(trl_logger)
    assert (plain.funcName, plain.lineno, plain.pathname) == ("emit", plain_line, __file__)
    assert (guarded.funcName, guarded.lineno, guarded.pathname) == ("emit", guarded_line, __file__)
    assert once.funcName == "warning_once" and once.pathname.endswith("logging.py")  # accelerate's frame, as unguarded
    prefix = plain.getMessage().removesuffix("pad token")  # "[RANK 0] " with accelerate >= 1.14, else ""
    assert seen == [
        ("trl.trainer.sft_trainer", logging.WARNING, prefix + "pad token", "log"),
        ("trl.trainer.sft_trainer", logging.WARNING, prefix + TG160 + " caller", "log"),
    ]


def test_adapter_warning_once_is_seen_every_time_but_printed_once(trl_logger: Any, seen: list[tuple[str, int, str, str]]) -> None:
    message = TG160 + " tokenguard-once-test"
    trl_logger.warning_once(message)
    trl_logger.warning_once(message)
    assert [r.getMessage().endswith(message) for r in _kept(trl_logger)] == [True]
    assert [m.endswith(message) for (_, _, m, _) in seen] == [True, True]
    once: Any = trl_logger.warning_once  # accelerate's lru_cache, reached through the wrapper
    assert once.cache_info().hits >= 1


def test_adapter_disabled_level_and_disabled_logger_do_not_hide(trl_logger: Any, seen: list[tuple[str, int, str, str]]) -> None:
    root = logging.getLogger("trl")
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        trl_logger.warning(TG160 + " quiet")
        trl_logger.warning_once(TG160 + " quiet once")
    finally:
        root.setLevel(level)
    logging.disable(logging.CRITICAL)
    try:
        trl_logger.warning(TG160 + " disabled")
    finally:
        logging.disable(logging.NOTSET)
    assert _kept(trl_logger) == []
    assert [m.split("] ")[-1] for (_, _, m, _) in seen] == [TG160 + " quiet", TG160 + " quiet once", TG160 + " disabled"]


def test_adapter_on_another_process_is_left_to_the_main_one(
    trl_logger: Any, seen: list[tuple[str, int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(trl_logger), "_should_log", staticmethod(lambda main_process_only: not main_process_only))
    trl_logger.warning(TG160 + " rank 1")  # main_process_only=True: only the main process logs it
    trl_logger.warning(TG160 + " every rank", main_process_only=False)
    assert [m.split("] ")[-1] for (_, _, m, _) in seen] == [TG160 + " every rank"]
    assert [r.getMessage().split("] ")[-1] for r in _kept(trl_logger)] == [TG160 + " every rank"]


def test_adapter_before_accelerate_state_raises_as_before(
    trl_logger: Any, seen: list[tuple[str, int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pytest.importorskip("accelerate.state").PartialState, "_shared_state", {})
    with pytest.raises(RuntimeError, match="initialize the accelerate state"):
        trl_logger.warning(TG160)
    assert seen == []


def test_python_warnings_from_trl_modules(seen: list[tuple[str, int, str, str]]) -> None:
    namespace = {"__name__": "trl.trainer.utils", "warnings": warnings}
    exec("def emit():\n    warnings.warn('The pad_token_id and eos_token_id values are identical.', UserWarning)\n", namespace)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace["emit"]()  # type: ignore[operator]
    assert [(n, m, c) for (n, _, m, c) in seen] == [
        ("trl.trainer.utils", "The pad_token_id and eos_token_id values are identical.", "warnings")
    ]
    assert caught[0].filename == "<string>"


def test_attach_imports_neither_trl_nor_accelerate_and_wraps_the_adapter_once_trl_logs() -> None:
    pytest.importorskip("trl")
    code = """
import sys, logging
import transformers
from pytest_tokenguard.guard import capture
loaded = {"trl", "accelerate", "accelerate.logging"} & set(sys.modules)
capture.attach()
assert {"trl", "accelerate", "accelerate.logging"} & set(sys.modules) == loaded, "attach imported trl or accelerate"
import accelerate.logging
from accelerate.logging import MultiProcessAdapter
original = MultiProcessAdapter.__dict__["log"], MultiProcessAdapter.__dict__["warning_once"]
assert MultiProcessAdapter.__dict__["log"] is original[0], "wrapped without any trl logger"
import trl.trainer.sft_trainer
if not isinstance(getattr(trl.trainer.sft_trainer, "logger", None), MultiProcessAdapter):
    print("skip")
    raise SystemExit(0)
assert MultiProcessAdapter.__dict__["log"] is capture._adapter_log, "not wrapped once trl logs"
assert isinstance(logging.getLogger("trl.trainer.sft_trainer"), capture.GuardedLogger)
capture.detach()
assert (MultiProcessAdapter.__dict__["log"], MultiProcessAdapter.__dict__["warning_once"]) == original
assert type(logging.getLogger("trl.trainer.sft_trainer")) is logging.Logger
print("ok")
"""
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    if run.stdout.strip() == "skip":
        pytest.skip("this trl's sft_trainer logs through no accelerate adapter")
    assert run.stdout.strip() == "ok", run.stdout + run.stderr
