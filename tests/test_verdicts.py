"""Verdicts users can trust: faults fail, notices inform, nothing crashes, every tokenguard failure is counted."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("transformers")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules in one process crashes, so everything the generated tests import is imported here first.
import torch
import transformers.testing_utils  # noqa: F401
from transformers.generation.utils import GenerationMixin  # noqa: F401

from pytest_tokenguard.guard.catalog import RUNTIME_CODES, SEVERITIES, severity
from pytest_tokenguard.suite import zoo
from tests.test_catalog import SAMPLES

pytest_plugins = ("pytester",)

#: The decision for every runtime code: notices are performance, initialisation or housekeeping hints (trl's:
#: a deprecated ``pad_token`` argument, TG164; the padding side of an SFT tokenizer in trl 0.12, TG169).
NOTICES = {"TG131", "TG132", "TG133", "TG140", "TG141", "TG142", "TG152", "TG157", "TG164", "TG169"}

EMIT = """
from transformers.utils import logging as hf_logging

TG110 = "Setting `pad_token_id` to `eos_token_id`:151645 for open-end generation."
TG113 = ("A decoder-only architecture is being used, but right-padding was detected! For correct generation "
         "results, please set `padding_side='left'` when initializing the tokenizer.")

def emit(message=TG110, name="transformers.generation.utils"):
    hf_logging.get_logger(name).warning(message)
"""


@pytest.fixture(scope="module", autouse=True)
def _modules_loaded_outside_pytester() -> None:
    model, _ = zoo.build("tinyllama-1.1b-chat-v1.0")
    model.resize_token_embeddings(model.get_input_embeddings().weight.shape[0] + 1)
    model.generate(torch.tensor([[1, 5]]), attention_mask=torch.ones(1, 2, dtype=torch.long), max_new_tokens=1)


@pytest.fixture
def emitting(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(tg_emit=EMIT)
    return pytester


# --- severities -------------------------------------------------------------------------------------------


def test_every_runtime_code_has_a_severity_and_a_reason() -> None:
    assert set(SEVERITIES) == RUNTIME_CODES
    assert {code for code in RUNTIME_CODES if severity(code) == "notice"} == NOTICES
    assert all(SEVERITIES[code][0] == "fault" for code in RUNTIME_CODES - NOTICES)
    assert all(len(reason) > 20 for _, reason in SEVERITIES.values())


def _one_sample_per_code() -> list[tuple[str, int, str]]:
    seen: dict[str, tuple[str, int, str]] = {}
    for code, level, message in SAMPLES:
        seen.setdefault(code, (code, level, message))
    return sorted(seen.values())


def test_each_code_fails_by_its_severity_and_notices_fail_under_strict(pytester: pytest.Pytester) -> None:
    samples = [s for s in _one_sample_per_code() if s[0] in RUNTIME_CODES]
    pytester.makepyfile(
        test_codes=f"""
        import pytest
        from transformers.utils import logging as hf_logging

        SAMPLES = {samples!r}

        @pytest.mark.parametrize(("code", "level", "message"), SAMPLES, ids=[s[0] for s in SAMPLES])
        def test_code(code, level, message):
            hf_logging.get_logger("transformers.somewhere").log(level, message)
        """
    )
    observed = {code for code, _, _ in samples}
    faults = sorted(observed - NOTICES)
    notices = sorted(observed & NOTICES)
    assert notices, "the samples cover notices"
    default = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
    default.assert_outcomes(failed=len(faults), passed=len(notices))
    failed = {line.split("[")[1].split("]")[0] for line in default.stdout.lines if line.startswith("FAILED test_codes.py")}
    assert failed == set(faults)
    strict = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-strict", "-p", "no:cacheprovider")
    strict.assert_outcomes(failed=len(observed))


RESIZE = """
import pytest
from pytest_tokenguard.suite import zoo

@pytest.mark.parametrize("grow", [0, 8], ids=["same-size", "grow"])
@pytest.mark.parametrize("multiple", [None, 64], ids=["no-multiple", "multiple-64"])
def test_resize(grow, multiple):
    model, tokenizer = zoo.build("tinyllama-1.1b-chat-v1.0")
    model.resize_token_embeddings(len(tokenizer) + grow, pad_to_multiple_of=multiple)
"""


def test_resize_notices_pass_by_default_and_fail_under_strict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_resize=RESIZE)
    default = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
    default.assert_outcomes(passed=4)
    default.stdout.fnmatch_lines(
        ["tokenguard: * findings in 4 guarded tests (TG14*; 0 allowed, 0 expected, * notices, 0 failing tests"]
    )
    strict = pytester.runpytest_inprocess("--tokenguard", "--tokenguard-strict", "-p", "no:cacheprovider")
    outcomes = strict.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, strict.stdout.str()
    strict.stdout.fnmatch_lines(["TG14* [[]notice, failing under --tokenguard-strict[]]"])


def test_right_padding_still_fails_by_default(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")  # pytest prints the full short-summary message on CI
    pytester.makepyfile(
        test_pad="""
        import torch
        from pytest_tokenguard.suite import zoo

        def test_right_padded_generate():
            model, tokenizer = zoo.build("tinyllama-1.1b-chat-v1.0")
            tokenizer.pad_token = tokenizer.unk_token
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            tokenizer.padding_side = "right"
            batch = tokenizer(["Hi.", "Who led the people out?"], return_tensors="pt", padding=True,
                              return_token_type_ids=False)
            model.generate(**batch, max_new_tokens=1, do_sample=False)
        """
    )
    result = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED test_pad.py::test_right_padded_generate - tokenguard: TG113 right padding with a decoder-only model"]
    )


# --- headlines ----------------------------------------------------------------------------------------------


HEADLINES = """
from tg_emit import emit, TG113

def test_one():
    emit(TG113)

def test_same_code_twice():
    emit()
    emit()

def test_several_codes():
    emit()
    emit()
    emit(TG113)
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["in-process", "xdist"])
def test_headlines_name_the_codes(emitting: pytest.Pytester, xdist: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")  # pytest prints the full short-summary message on CI
    emitting.makepyfile(test_head=HEADLINES)
    args = ["--tokenguard", "-p", "no:cacheprovider", "--junitxml", "junit.xml", "-rf"]
    result = emitting.runpytest_subprocess(*args, "-n", "2") if xdist else emitting.runpytest_inprocess(*args)
    result.assert_outcomes(failed=3)
    headlines = [
        "tokenguard: TG113 right padding with a decoder-only model",
        "tokenguard: TG110 pad_token_id defaulted to eos_token_id for generation (2 findings)",
        "tokenguard: TG110, TG113 (3 findings)",
    ]
    for name, headline in zip(("test_one", "test_same_code_twice", "test_several_codes"), headlines, strict=True):
        result.stdout.fnmatch_lines([f"FAILED test_head.py::{name} - {headline}"])
    root = ET.parse(emitting.path / "junit.xml").getroot()
    messages = {case.get("name"): case.find("failure").get("message") for case in root.iter("testcase")}  # type: ignore[union-attr]
    assert messages == dict(zip(("test_one", "test_same_code_twice", "test_several_codes"), headlines, strict=True))


# --- the summary counts every tokenguard failure --------------------------------------------------------------


def test_summary_counts_check_failures_raised_errors_and_suite_steps(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_raised="""
        import pytest
        from pytest_tokenguard import check_special_tokens
        from pytest_tokenguard.suite import zoo
        from pytest_tokenguard.suite.table import SUITE_CODES_PROPERTY, SUITE_PROPERTY

        def test_check(tokenguard):
            model, tokenizer = zoo.build("qwen3-0.6b")
            tokenguard.check(model, tokenizer)

        @pytest.mark.tokenguard
        def test_pipeline_error():
            raise ValueError("Pipeline with tokenizer without pad_token cannot do batching. You can try to set it "
                             "with `pipe.tokenizer.pad_token_id = model.config.eos_token_id`.")

        @pytest.mark.tokenguard
        def test_suite_step(request):
            request.node.user_properties.append((SUITE_PROPERTY, "qwen3-0.6b|labels_keep_eos"))
            request.node.user_properties.append((SUITE_CODES_PROPERTY, "TG206!"))
            assert False, "every eos masked"

        @pytest.mark.tokenguard
        def test_unrelated_failure():
            assert 1 == 2
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "tokenguard: 0 findings in 4 guarded tests; 0 allowed, 0 expected, 3 raised failures, 3 failing tests",
            "FAILED test_raised.py::test_check (TG201)",
            "FAILED test_raised.py::test_pipeline_error (TG145)",
            "FAILED test_raised.py::test_suite_step (TG206)",
        ]
    )
    assert "tokenguard: clean" not in result.stdout.str()


def test_singular_and_sorted(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(test_b="from tg_emit import emit\ndef test_z():\n    emit()\n")
    emitting.makepyfile(test_a="from tg_emit import emit\ndef test_y():\n    emit()\n")
    result = emitting.runpytest_subprocess("--tokenguard", "-p", "no:cacheprovider", "-n", "2", "--tokenguard-report", "r.json")
    result.stdout.fnmatch_lines(
        [
            "tokenguard: 2 findings in 2 guarded tests (TG110 x2); 0 allowed, 0 expected, 2 failing tests",
            "FAILED test_a.py::test_y (TG110)",
            "FAILED test_b.py::test_z (TG110)",
        ]
    )
    report = json.loads((emitting.path / "r.json").read_text())
    assert report["summary"]["failing_tests"] == ["test_a.py::test_y", "test_b.py::test_z"]
    single = emitting.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider", "test_a.py")
    single.stdout.fnmatch_lines(["tokenguard: 1 finding in 1 guarded test (TG110 x1); 0 allowed, 0 expected, 1 failing test"])


# --- no crash at the end of the run ---------------------------------------------------------------------------

STALE = """
import pytest
@pytest.mark.tokenguard_allow("TG101", reason="no longer needed")
def test_a():
    pass
"""


@pytest.mark.parametrize("how", [("-W", "error"), ("-o", "filterwarnings=error")], ids=["-W error", "filterwarnings"])
def test_stale_allow_under_warnings_as_errors_is_an_error_not_a_crash(pytester: pytest.Pytester, how: tuple[str, str]) -> None:
    pytester.makepyfile(test_stale=STALE)
    result = pytester.runpytest_subprocess(
        "--tokenguard", "-p", "no:cacheprovider", *how, "--tokenguard-report", "r.json", "--junitxml", "j.xml"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "tokenguard: clean, 1 guarded test, no token-alignment warnings",
            f"tokenguard: ERROR stale allow entry (warnings are errors): {pytester.path / 'test_stale.py'}:2: "
            "tokenguard allow entry test_stale.py::test_a::TG101 matched nothing in this run",
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert (pytester.path / "r.json").exists() and (pytester.path / "j.xml").exists()


def test_stale_allow_warning_points_at_the_entry(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stale=STALE)
    pytester.makeini("[pytest]\ntokenguard_allow =\n    TG113\n")
    result = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.re_match_lines(
        [r".*test_stale\.py:2: TokenguardStaleAllowWarning: tokenguard allow entry test_stale\.py::test_a::TG101 matched nothing"]
    )
    result.stdout.re_match_lines(
        [r".*\.ini:2: TokenguardStaleAllowWarning: tokenguard allow entry global::TG113 matched nothing"]
    )


# --- usage errors survive xdist -------------------------------------------------------------------------------------


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["in-process", "xdist"])
def test_bad_marker_is_the_same_usage_error_with_and_without_xdist(pytester: pytest.Pytester, xdist: tuple[str, ...]) -> None:
    pytester.makepyfile(test_unknown='import pytest\n@pytest.mark.tokenguard_allow("TG999", reason="x")\ndef test_a(): pass\n')
    result = pytester.runpytest_subprocess("--tokenguard", "-p", "no:cacheprovider", *xdist)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: tokenguard: unknown code 'TG999' in tokenguard_allow on test_unknown.py::test_a. Valid codes: TG100,*"]
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert "tokenguard: clean" not in result.stdout.str()


def test_empty_model_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--tokenguard-model=", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: tokenguard: --tokenguard-model is empty; give a local folder, e.g. --tokenguard-model ./my-checkpoint"]
    )


# --- findings while a test module is imported -------------------------------------------------------------------


def test_finding_at_import_fails_the_module_collection(emitting: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the short summary line whole
    emitting.makepyfile(test_module_level="from tg_emit import emit, TG113\nemit(TG113)\n\ndef test_nothing_here():\n    pass\n")
    result = emitting.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_module_level.py*",
            "TG113 right padding with a decoder-only model",
            "  phase:   collection, seen 1 time",
            "ERROR test_module_level.py - tokenguard: TG113 right padding with a decoder-only model",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_module_level.py (TG113)"])


def test_module_allow_marker_covers_import_time_findings(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(
        test_module_level="""
        import pytest
        from tg_emit import emit, TG113
        pytestmark = pytest.mark.tokenguard_allow("TG113", reason="this module right-pads on purpose")
        emit(TG113)

        def test_nothing_here():
            pass
        """
    )
    result = emitting.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider", "-W", "error::pytest.PytestWarning")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tokenguard: 1 finding in 1 guarded test (TG113 x1); 1 allowed, 0 expected, 0 failing tests"])


# --- logger classes installed while the guard is attached -----------------------------------------------------------


def test_a_logger_class_set_through_the_manager_is_guarded_and_kept(emitting: pytest.Pytester) -> None:
    emitting.makeconftest(
        """
        import logging
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_unconfigure(config):  # after the guard detached: what is left installed
            manager = logging.Logger.manager
            print("LEFT", getattr(manager.loggerClass, "__name__", manager.loggerClass), "setLoggerClass" in vars(manager))
        """
    )
    emitting.makepyfile(
        test_classes="""
        import logging
        from tg_emit import emit

        class AppLogger(logging.Logger):
            pass

        def test_installs_its_class():
            logging.Logger.manager.setLoggerClass(AppLogger)
            assert isinstance(logging.getLogger("transformers.created.meanwhile"), AppLogger)

        def test_logger_created_meanwhile_is_guarded():
            emit(name="transformers.created.meanwhile")
        """
    )
    result = emitting.runpytest_subprocess("--tokenguard", "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_classes.py::test_logger_created_meanwhile_is_guarded (TG110)"])
    result.stdout.fnmatch_lines(["LEFT AppLogger False"])  # the user's class stays installed, logging's own method back


# --- smaller ---------------------------------------------------------------------------------------------------------


def test_json_report_honours_the_umask(emitting: pytest.Pytester) -> None:
    emitting.makepyfile(test_r="def test_a():\n    pass\n")
    old = os.umask(0o022)
    try:
        emitting.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider", "--tokenguard-report", "r.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((emitting.path / "r.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("command", [["catalog"], ["codes"], ["catalog", "--all"]])
def test_cli_listing_into_a_closed_pipe_exits_0(command: list[str], tmp_path: Path) -> None:
    shell = f"{sys.executable} -m pytest_tokenguard {' '.join(command)} | head -1"
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(("tokenguard catalog", "TG100")) and not run.stderr


def test_codes_and_catalog_show_severity(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_tokenguard.cli import main

    assert main(["codes"]) == 0
    out = capsys.readouterr().out
    assert "TG140  notice           embeddings resized without pad_to_multiple_of" in out
    assert "TG113  fault            right padding with a decoder-only model" in out
    assert main(["catalog", "--all"]) == 0
    out = capsys.readouterr().out
    assert "TG140  embeddings resized without pad_to_multiple_of  [notice, log, transformers" in out
    assert "  why:   performance hint (Tensor Cores): the resize is correct without pad_to_multiple_of" in out
