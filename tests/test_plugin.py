"""User stories for `pytest --tokenguard`, run in-process with pytester."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("transformers")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules in one process crashes, so everything the generated tests import is imported here first.
import transformers.testing_utils  # noqa: F401

pytest_plugins = ("pytester",)

EMIT = """
from transformers.utils import logging as hf_logging

TG110 = "Setting `pad_token_id` to `eos_token_id`:151645 for open-end generation."
TG113 = ("A decoder-only architecture is being used, but right-padding was detected! For correct generation "
         "results, please set `padding_side='left'` when initializing the tokenizer.")

def emit(message=TG110, name="transformers.generation.utils"):
    hf_logging.get_logger(name).warning(message)
"""


@pytest.fixture
def emitting(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(tg_emit=EMIT)
    return pytester


def test_finding_in_call_fails_with_code_message_and_fix(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        from tg_emit import emit
        def test_generate():
            emit()
            emit()
        def test_clean():
            pass
        """
    )
    result = emitting.runpytest("--tokenguard")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*tokenguard: 2 special-token findings*",
            "TG110 pad_token_id defaulted to eos_token_id for generation",
            "  message: Setting `pad_token_id` to `eos_token_id`:151645 for open-end generation.",
            "  logger:  transformers.generation.utils (log, WARNING)",
            "  phase:   call, seen 2 times",
            "  fix:     set model.generation_config.pad_token_id*",
            "*= tokenguard =*",
            "tokenguard: 2 findings in 2 guarded tests (TG110 x2); 0 allowed, 0 expected, 1 failing test",
            "FAILED test_finding_in_call_fails_with_code_message_and_fix.py::test_generate (TG110)",
        ]
    )


def test_without_flag_nothing_changes(emitting: pytest.Pytester) -> None:
    emitting.makepyfile("from tg_emit import emit\ndef test_generate():\n    emit()\n")
    result = emitting.runpytest()
    result.assert_outcomes(passed=1)
    assert "= tokenguard =" not in result.stdout.str() and "TG110" not in result.stdout.str()


def test_disabled_with_no_plugin_flag(emitting: pytest.Pytester) -> None:
    emitting.makepyfile("from tg_emit import emit\ndef test_generate():\n    emit()\n")
    result = emitting.runpytest("-p", "no:tokenguard")
    result.assert_outcomes(passed=1)
    result = emitting.runpytest("-p", "no:tokenguard", "--tokenguard")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the option does not exist without the plugin


def test_ini_and_markers_enable(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        test_marked="""
        import pytest
        from tg_emit import emit
        @pytest.mark.tokenguard
        def test_marked():
            emit()
        def test_unmarked():
            emit()
        @pytest.mark.tokenguard
        class TestClass:
            def test_in_class(self):
                emit()
        """,
        test_module_marked="""
        import pytest
        from tg_emit import emit
        pytestmark = pytest.mark.tokenguard
        def test_module():
            emit()
        """,
    )
    emitting.runpytest().assert_outcomes(failed=3, passed=1)
    emitting.makeini("[pytest]\ntokenguard = true\n")
    emitting.runpytest().assert_outcomes(failed=4)


def test_setup_and_teardown_findings_error_the_test(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        import pytest
        from tg_emit import emit
        @pytest.fixture
        def in_setup():
            emit()
        @pytest.fixture
        def in_teardown():
            yield
            emit()
        def test_setup(in_setup):
            pass
        def test_teardown(in_teardown):
            pass
        """
    )
    result = emitting.runpytest("--tokenguard")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_setup*", "*phase:   setup*", "*ERROR at teardown of test_teardown*"])


def test_failed_test_keeps_its_error_and_gets_the_findings(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        from tg_emit import emit
        def test_broken():
            emit()
            assert 1 == 2, "own failure"
        """
    )
    result = emitting.runpytest("--tokenguard")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: own failure*", "*tokenguard findings (call)*", "TG110*"])


def test_allow_marker_ini_and_cli(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        test_allow="""
        import pytest
        from tg_emit import emit, TG113
        @pytest.mark.tokenguard_allow("TG110", reason="open-end generation in this smoke test")
        def test_function_allow():
            emit()
        @pytest.mark.tokenguard_allow("TG110", reason="class")
        class TestAllowed:
            def test_in_class(self):
                emit()
        def test_not_allowed():
            emit(TG113)
        """
    )
    result = emitting.runpytest("--tokenguard")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*2 allowed, 0 expected, 1 failing test*", "FAILED test_allow.py::test_not_allowed (TG113)"])
    emitting.runpytest("--tokenguard", "--tokenguard-allow", "TG113,TG101").assert_outcomes(passed=3)
    emitting.makeini("[pytest]\ntokenguard_allow =\n    TG113\n")
    emitting.runpytest("--tokenguard").assert_outcomes(passed=3)


def test_module_allow_marker(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        import pytest
        from tg_emit import emit
        pytestmark = pytest.mark.tokenguard_allow("TG110", reason="module")
        def test_a():
            emit()
        """
    )
    emitting.runpytest("--tokenguard").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        (
            '@pytest.mark.tokenguard_allow("TG999", reason="x")',
            (),
            "*tokenguard: unknown code 'TG999' in tokenguard_allow on test_*.py::test_a. Valid codes: TG100, TG101*",
        ),
        (
            '@pytest.mark.tokenguard_allow("TG110")',
            (),
            "*tokenguard: tokenguard_allow on test_*.py::test_a needs a reason; "
            'write @pytest.mark.tokenguard_allow("TG101", reason="why this test may emit it")',
        ),
        ("", ("--tokenguard-allow", "TG42"), "*tokenguard: unknown code 'TG42' in --tokenguard-allow. Valid codes: TG100,*"),
    ],
    ids=["unknown-code", "missing-reason", "cli-unknown"],
)
def test_bad_allow_is_a_usage_error(emitting: pytest.Pytester, source: str, args: tuple[str, ...], message: str) -> None:
    emitting.makepyfile(f"import pytest\n{source}\ndef test_a():\n    pass\n")
    result = emitting.runpytest("--tokenguard", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_unknown_code_in_ini_is_a_usage_error(emitting: pytest.Pytester) -> None:
    emitting.makeini("[pytest]\ntokenguard_allow = TG101, TG7\n")
    emitting.makepyfile("def test_a():\n    pass\n")
    result = emitting.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown code 'TG7' in ini tokenguard_allow*"])


def test_stale_allow_entries_are_reported(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        import pytest
        @pytest.mark.tokenguard_allow("TG101", reason="never fires")
        def test_quiet():
            pass
        """
    )
    result = emitting.runpytest("--tokenguard", "--tokenguard-allow", "TG113")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*TokenguardStaleAllowWarning: tokenguard allow entry global::TG113 matched nothing*",
            "*TokenguardStaleAllowWarning: tokenguard allow entry test_stale_allow_entries_are_reported.py::test_quiet"
            "::TG101 matched nothing*",
        ]
    )


def test_expect_fixture(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        import pytest
        from tg_emit import emit, TG113
        def test_expected(tokenguard):
            with tokenguard.expect("TG110"):
                emit()
            assert [f.code for f in tokenguard.records] == ["TG110"]
            assert tokenguard.records[0].expected
            tokenguard.assert_clean()
        def test_expected_missing(tokenguard):
            with tokenguard.expect("TG110", "TG113"):
                emit()
        def test_outside_block_still_fails(tokenguard):
            with tokenguard.expect("TG110"):
                emit()
            emit(TG113)
        def test_assert_clean_and_clear(tokenguard):
            emit()
            with pytest.raises(AssertionError, match="TG110"):
                tokenguard.assert_clean()
            tokenguard.clear()
            assert tokenguard.records == []
        def test_expect_unknown(tokenguard):
            with tokenguard.expect("TG0"):
                pass
        """
    )
    result = emitting.runpytest()  # the fixture guards its test even without --tokenguard
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*tokenguard.expect: TG113 not emitted inside the block (emitted in this test so far: TG110)*",
            "*unknown code 'TG0' in tokenguard.expect()*",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_expect_fixture.py::test_outside_block_still_fails (TG113)"])


def test_caught_again_under_verbosity_error_and_warning_once(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        from transformers.utils import logging as hf_logging
        from tg_emit import TG113
        MESSAGE = ("The attention mask is not set and cannot be inferred from input because pad token is same as eos "
                   "token. As a consequence, you may observe unexpected behavior. Please pass your input's "
                   "`attention_mask` to obtain reliable results.")
        def once():
            hf_logging.get_logger("transformers.generation.utils").warning_once(MESSAGE)
        def test_first():
            once()
        def test_second_cached():
            once()
        def test_silenced(capsys):
            hf_logging.set_verbosity_error()
            try:
                hf_logging.get_logger("transformers.generation.utils").warning(TG113)
                hf_logging.disable_default_handler()
                hf_logging.get_logger("transformers.generation.utils").setLevel(50)
                once()
            finally:
                hf_logging.get_logger("transformers.generation.utils").setLevel(0)
                hf_logging.enable_default_handler()
                hf_logging.set_verbosity_warning()
        """
    )
    result = emitting.runpytest("--tokenguard")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*(TG112 x3, TG113 x1)*3 failing tests*"])
    blocks = [line for line in result.stdout.lines if line == "TG112 attention mask cannot be inferred: pad equals eos"]
    assert len(blocks) == 3


def test_warnings_channel_and_thread(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        import threading, warnings
        from tg_emit import emit
        def test_thread():
            t = threading.Thread(target=emit)
            t.start(); t.join()
        def test_python_warning():
            ns = {"__name__": "transformers.generation.configuration_utils", "warnings": warnings}
            exec("def f():\\n    warnings.warn('`pad_token_id` should be positive but got -1. This will cause errors "
                 "when batch generating, if there is padding. Please set `pad_token_id` explicitly as "
                 "`model.generation_config.pad_token_id=PAD_TOKEN_ID` to avoid errors in generation')", ns)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ns["f"]()
        """
    )
    result = emitting.runpytest("--tokenguard")
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    assert "FAILED test_warnings_channel_and_thread.py::test_thread (TG110)" in text
    assert "FAILED test_warnings_channel_and_thread.py::test_python_warning (TG120)" in text


def test_non_token_warning_ignored(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        from tg_emit import emit
        def test_weights():
            emit("Some weights of the model checkpoint at x were not used when initializing Qwen3ForCausalLM",
                 "transformers.modeling_utils")
        """
    )
    result = emitting.runpytest("--tokenguard")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tokenguard: clean, 1 guarded test, no token-alignment warnings"])


def test_fallback_code_for_unknown_token_warning(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        from tg_emit import emit
        def test_future():
            emit("In a future version the pad token of your adapter will be ignored.", "transformers.peft_utils")
        """
    )
    result = emitting.runpytest("--tokenguard")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["TG100 other transformers warning about special tokens*"])


def test_json_report_junit_and_github(emitting: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    emitting.makepyfile(
        test_rep="""
        import pytest
        from tg_emit import emit, TG113
        def test_bad():
            emit()
        @pytest.mark.tokenguard_allow("TG113", reason="deliberate right padding")
        def test_allowed():
            emit(TG113)
        def test_clean():
            pass
        """
    )
    result = emitting.runpytest("--tokenguard", "--tokenguard-report", "out/tg.json", "--junitxml", "junit.xml")
    result.assert_outcomes(failed=1, passed=2)
    data = json.loads((emitting.path / "out" / "tg.json").read_text())
    assert data["schema_version"] == 1
    assert set(data["versions"]) >= {"transformers", "peft", "torch", "pytest"}
    assert data["versions"]["transformers"]
    tests = data["tests"]
    assert set(tests) == {"test_rep.py::test_bad", "test_rep.py::test_allowed", "test_rep.py::test_clean"}
    (bad,) = tests["test_rep.py::test_bad"]["findings"]
    assert bad["code"] == "TG110" and bad["phase"] == "call" and bad["count"] == 1
    assert bad["logger"] == "transformers.generation.utils" and bad["allowed"] is False and bad["expected"] is False
    (allowed,) = tests["test_rep.py::test_allowed"]["findings"]
    assert allowed["allowed"] is True
    assert tests["test_rep.py::test_clean"]["findings"] == []
    assert data["summary"]["failing_tests"] == ["test_rep.py::test_bad"]

    root = ET.parse(emitting.path / "junit.xml").getroot()
    props = {(p.get("name"), p.get("value")) for p in root.iter("property")}
    assert ("tokenguard:TG110", "call x1: Setting `pad_token_id` to `eos_token_id`:151645 for open-end generation.") in props
    assert any(name == "tokenguard:TG113" and str(value).startswith("call x1 (allowed)") for name, value in props)

    result.stdout.fnmatch_lines(["::error file=test_rep.py,line=3::TG110 pad_token_id defaulted*"])
    assert "::error file=test_rep.py,line=6" not in result.stdout.str()


def test_xdist_same_verdicts_and_one_merged_report(emitting: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    emitting.makepyfile(
        test_x="""
        import pytest
        from tg_emit import emit
        @pytest.mark.parametrize("i", range(6))
        def test_many(i):
            if i % 2:
                emit()
        """
    )
    result = emitting.runpytest_subprocess("--tokenguard", "-n", "2", "--tokenguard-report", "r.json", "-p", "xdist")
    result.assert_outcomes(failed=3, passed=3)
    data = json.loads((emitting.path / "r.json").read_text())
    assert len(data["tests"]) == 6
    assert sorted(data["summary"]["failing_tests"]) == [f"test_x.py::test_many[{i}]" for i in (1, 3, 5)]
    result.stdout.fnmatch_lines(["tokenguard: 3 findings in 6 guarded tests (TG110 x3)*"])


def test_logging_state_unchanged_by_a_guarded_run(emitting: pytest.Pytester) -> None:
    import logging

    def snapshot() -> dict[str, object]:
        state: dict[str, object] = {"disable": logging.root.manager.disable, "class": logging.Logger.manager.loggerClass}
        for name, logger in sorted(logging.Logger.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and (name.startswith("transformers") or name == "root"):
                state[name] = (
                    type(logger),
                    list(logger.handlers),
                    logger.level,
                    logger.propagate,
                    logger.disabled,
                    list(logger.filters),
                )
        return state

    from transformers.utils import logging as hf_logging

    emitting.makepyfile(
        """
        from tg_emit import emit
        def test_a():
            emit()
        def test_b():
            pass
        """
    )
    before, verbosity = snapshot(), hf_logging.get_verbosity()
    emitting.runpytest("--tokenguard").assert_outcomes(failed=1, passed=1)
    assert snapshot() == before
    assert hf_logging.get_verbosity() == verbosity


def test_logging_behaves_as_without_the_guard(emitting: pytest.Pytester) -> None:
    # transformers' own logging expectations: CaptureLogger output, verbosity and env override.
    emitting.makepyfile(
        """
        import os
        import transformers
        from transformers import logging
        from transformers.testing_utils import CaptureLogger

        def test_integration():
            logger = logging.get_logger("transformers.models.bart.tokenization_bart")
            with CaptureLogger(logger) as cl:
                logger.warning("Testing 1, 2, 3")
            assert cl.out == "Testing 1, 2, 3\\n"
            logging.set_verbosity_error()
            try:
                with CaptureLogger(logger) as cl:
                    logger.warning("Testing 1, 2, 3")
                assert cl.out == ""
                assert logger.getEffectiveLevel() == logging.ERROR
            finally:
                logging.set_verbosity_warning()

        def test_env_override(monkeypatch):
            monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
            transformers.utils.logging._reset_library_root_logger()
            try:
                logging.get_logger("transformers.models.bart.tokenization_bart")
                assert logging.get_verbosity() == logging.log_levels["error"]
            finally:
                monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "")
                transformers.utils.logging._reset_library_root_logger()
                logging.get_logger("transformers")

        def test_nothing_printed_at_error_verbosity(capsys):
            logging.set_verbosity_error()
            try:
                logging.get_logger("transformers.generation.utils").warning("pad token is odd")
            finally:
                logging.set_verbosity_warning()
            assert capsys.readouterr().err == ""

        def test_caplog_sees_what_it_saw_before(caplog):
            logging.get_logger("transformers.generation.utils").warning("hello caplog")
            assert [r.getMessage() for r in caplog.records] == ["hello caplog"]
        """
    )
    plain = emitting.runpytest("-p", "no:tokenguard").parseoutcomes()
    guarded = emitting.runpytest("--tokenguard", "--tokenguard-allow", "TG100").parseoutcomes()
    assert guarded == plain
    assert plain["passed"] == 4 and set(plain) <= {"passed", "warnings"}


@pytest.mark.parametrize("args", [(), ("--tokenguard",)], ids=["off", "on"])
def test_no_transformers_or_torch_import(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    pytester.makeconftest(
        """
        import sys
        def pytest_unconfigure(config):
            heavy = sorted(m for m in ("transformers", "torch", "peft") if m in sys.modules)
            with open("heavy.txt", "w") as f:
                f.write(",".join(heavy))
        """
    )
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "heavy.txt").read_text() == ""


def test_short_summary_is_one_headline(emitting: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")  # pytest prints the full short-summary message on CI
    emitting.makepyfile("from tg_emit import emit, TG113\ndef test_generate():\n    emit()\n    emit(TG113)\n")
    result = emitting.runpytest("--tokenguard", "-rf")
    result.stdout.fnmatch_lines(
        ["FAILED test_short_summary_is_one_headline.py::test_generate - tokenguard: TG110, TG113 (2 findings)"]
    )


def test_marker_allow_is_credited_before_the_global_list(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        """
        import pytest
        from tg_emit import emit
        @pytest.mark.tokenguard_allow("TG110", reason="this test pads on eos on purpose")
        def test_a():
            emit()
        """
    )
    result = emitting.runpytest("--tokenguard", "--tokenguard-allow", "TG110")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "global::TG110 matched nothing" in out
    assert "test_a::TG110 matched nothing" not in out
