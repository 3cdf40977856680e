"""An in-process pytest session inside a guarded test (pytester.runpytest) leaves the outer guard as it was."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules in one process crashes, so everything the generated tests import is imported here first.
import transformers.testing_utils
import transformers.trainer
from transformers.generation.utils import GenerationMixin

pytest_plugins = ("pytester",)


@pytest.fixture(scope="module", autouse=True)
def _modules_loaded_outside_pytester() -> None:
    """Generate once here: the modules generate() imports lazily (which vary by version) are then loaded
    before pytester's in-process runs, which drop modules first imported inside them."""
    import torch

    from pytest_tokenguard.suite import zoo

    model, _ = zoo.build("tinyllama-1.1b-chat-v1.0")
    model.generate(torch.tensor([[1, 5]]), attention_mask=torch.ones(1, 2, dtype=torch.long), max_new_tokens=1)


INNER = """
from transformers.utils import logging as hf_logging

TG110 = "Setting `pad_token_id` to `eos_token_id`:151645 for open-end generation."

def emit():
    hf_logging.get_logger("transformers.generation.utils").warning(TG110)
"""

OUTER_CONFTEST = """
pytest_plugins = ("pytester",)
"""


def test_a_finding_after_an_inner_run_still_fails_the_outer_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(tg_inner=INNER + f"\nINNER = {INNER!r}\n")
    pytester.makeconftest(OUTER_CONFTEST)
    pytester.makepyfile(
        test_outer="""
        from tg_inner import INNER, emit

        def test_inner_run_then_warning(pytester):
            pytester.makepyfile(tg_inner=INNER)
            pytester.makepyfile(test_inner="from tg_inner import emit\\ndef test_warns():\\n    emit()\\n")
            inner = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
            inner.assert_outcomes(failed=1)  # the inner test's own finding, in the inner session
            emit()  # after the inner session ended: the outer guard must still see this

        def test_inner_run_only(pytester):
            pytester.makepyfile(tg_inner=INNER)
            pytester.makepyfile(test_inner="from tg_inner import emit\\ndef test_warns():\\n    emit()\\n")
            pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider").assert_outcomes(failed=1)
        """
    )
    result = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*tokenguard: 1 special-token finding",
            "TG110 pad_token_id defaulted to eos_token_id for generation",
            "  phase:   call, seen 1 time",  # the inner session's finding is not the outer test's
            "tokenguard: 1 finding in 2 guarded tests (TG110 x1); 0 allowed, 0 expected, 1 failing test",
            "FAILED test_outer.py::test_inner_run_then_warning (TG110)",
        ]
    )


HELPERS = """
import torch
from pytest_tokenguard.suite import zoo

def misaligned_generate():
    model, _ = zoo.build("tinyllama-1.1b-chat-v1.0")
    model.generation_config.pad_token_id = 99999  # beyond the 32000 embedding rows: TG204 at generate()
    return model.generate(torch.tensor([[1, 5, 6]]), attention_mask=torch.ones(1, 3, dtype=torch.long),
                          max_new_tokens=1, do_sample=False)
"""


@pytest.mark.parametrize(
    "inner_args",
    [("--tokenguard", "--tokenguard-calls"), ("--tokenguard",), ()],
    ids=["inner-calls", "inner-guard", "inner-plain"],
)
def test_calls_checks_survive_an_inner_run(pytester: pytest.Pytester, inner_args: tuple[str, ...]) -> None:
    pytester.makepyfile(tg_helpers=HELPERS)
    pytester.makeconftest(OUTER_CONFTEST)
    pytester.makepyfile(
        test_outer=f"""
        import logging
        import warnings

        import transformers.trainer
        from transformers.generation.utils import GenerationMixin
        from pytest_tokenguard.guard import capture

        def guard_state():
            logger = logging.getLogger("transformers.generation.utils")
            return (type(logger), logging.Logger.manager.loggerClass, warnings.warn,
                    GenerationMixin.__dict__["generate"], transformers.trainer.Trainer.__dict__["train"])

        def test_first_runs_an_inner_session(pytester):
            before = guard_state()
            assert isinstance(logging.getLogger("transformers.generation.utils"), capture.GuardedLogger)
            assert hasattr(before[3], "__tokenguard_original__") and hasattr(before[4], "__tokenguard_original__")
            pytester.makepyfile(test_inner="def test_ok():\\n    pass\\n")
            pytester.runpytest_inprocess(*{inner_args!r}, "-p", "no:cacheprovider").assert_outcomes(passed=1)
            assert guard_state() == before  # logger classes, warnings.warn and both call wrappers intact

        def test_later_generate_is_still_checked():
            from tg_helpers import misaligned_generate
            misaligned_generate()
        """
    )
    result = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-calls", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "TG204 special token id out of range",
            "  message: generation config pad 99999: >= the 32000 embedding rows [at generate()]",
            "FAILED test_outer.py::test_later_generate_is_still_checked (TG204)",
        ]
    )


def test_an_inner_session_takes_away_the_wrappers_only_it_needed() -> None:
    # a pytester run with --tokenguard-calls inside a plain --tokenguard session (the tokenguard fixture) left
    # Trainer.train / generate wrapped for the rest of the outer session

    from pytest_tokenguard.guard import calls

    if calls._installation.users:
        pytest.skip("this process's own session already uses the call wrappers")
    original_train = transformers.trainer.Trainer.__dict__["train"]
    original_generate = GenerationMixin.__dict__["generate"]
    outer, inner = calls.Options(), calls.Options(calls=True)
    calls.acquire(outer)
    try:
        assert transformers.trainer.Trainer.__dict__["train"] is original_train  # the outer asks for no wrappers
        calls.acquire(inner)
        assert hasattr(transformers.trainer.Trainer.__dict__["train"], "__tokenguard_original__")
        assert hasattr(GenerationMixin.__dict__["generate"], "__tokenguard_original__")
        calls.release(inner)
        assert transformers.trainer.Trainer.__dict__["train"] is original_train
        assert GenerationMixin.__dict__["generate"] is original_generate
        assert calls._installation.users == [outer] and calls._installation.finder is not None  # outer still served
    finally:
        calls.release(outer)
    assert calls._installation.users == [] and calls._installation.finder is None
