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
