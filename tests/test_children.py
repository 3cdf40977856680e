"""Child processes of guarded tests report their findings to the test that started them (issue 12).

Each story runs a real pytest session (in-process through pytester, so the session's own restoring of the
environment and the ``.pth`` file is exercised too) whose test starts real Python processes that import
transformers and log through it, or train with ``Trainer``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
import torch  # noqa: F401  (imported before pytester's in-process runs: see _modules_loaded_outside_pytester)
import transformers.trainer  # noqa: F401

from pytest_tokenguard import versions
from pytest_tokenguard.children import hook as child_hook  # noqa: F401  (loaded outside the in-process runs)
from pytest_tokenguard.children import parent, spool
from pytest_tokenguard.guard import capture, routing  # noqa: F401  (idem)
from pytest_tokenguard.guard.findings import TestRecorder, headline

pytest_plugins = ("pytester",)

TG113 = (
    "A decoder-only architecture is being used, but right-padding was detected! For correct generation "
    "results, please set `padding_side='left'` when initializing the tokenizer."
)

#: a child that logs TG113 through transformers' own logger (as generate() does)
EMIT = f"""
import sys
from transformers.utils import logging as hf_logging
hf_logging.get_logger("transformers.generation.utils").warning({TG113!r})
print("EMITTED", flush=True)
"""

#: a child that trains the misaligned Qwen3 layout with Trainer (TG101 on transformers >= 5.18), at module level
TRAIN = """
import tempfile
from pytest_tokenguard.suite import zoo
model, tokenizer = zoo.build("qwen3-0.6b")
with tempfile.TemporaryDirectory() as directory:
    zoo.lora_train(model, tokenizer, directory, steps=1)
print("TRAINED", flush=True)
"""

#: the "process:" line of a child's finding (the pid varies)
CHILD_LINE = "  process: child pid *"

#: what Trainer.train() rewrites on the zoo's Qwen3 layout with the installed transformers: 4.56-5.17 also write
#: the tokenizer's None over bos; before 4.56 the guard synthesizes what 5.18+ does (pad only)
QWEN3_UPDATED = {"bos_token_id": None, "pad_token_id": 151643} if versions.trainer_writes_none() else {"pad_token_id": 151643}
#: the TG101 headline's parenthesis for it: "(bos_token_id None, pad_token_id 151643)"
QWEN3_HEADLINE = ", ".join(f"{name} {value}" for name, value in QWEN3_UPDATED.items())
#: the TG101 logger line: the Trainer's own record, or the guard's synthesized one
TG101_LOGGER = (
    "  logger:  transformers.* (log, WARNING)"
    if versions.trainer_aligns()
    else "  logger:  pytest_tokenguard.synthesized (synthesized, WARNING)"
)


@pytest.fixture
def children(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("COLUMNS", "200")
    pytester.makepyfile(emit=EMIT, train=TRAIN)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest("--tokenguard", "-p", "no:cacheprovider", *args)
    # every story: the session left no trace in this process
    assert spool.SPOOL_ENV not in os.environ and spool.TEST_ENV not in os.environ
    assert not list(parent.site_packages().glob(f"{parent.PTH_PREFIX}-{spool.host()}-{os.getpid()}.pth"))
    return result


def test_subprocess_run_of_a_training_script(children: pytest.Pytester) -> None:
    children.makepyfile(
        test_train="""
        import subprocess, sys

        def test_train():
            run = subprocess.run([sys.executable, "train.py"], capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
            assert "TRAINED" in run.stdout
        """
    )
    result = run(children)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG101 Trainer rewrote special tokens to match the tokenizer",
            TG101_LOGGER,
            "  phase:   call, seen 1 time",
            CHILD_LINE,
            f"  updated tokens: {QWEN3_UPDATED}",
            "FAILED test_train.py::test_train (TG101)",
            "FAILED test_train.py::test_train - tokenguard: TG101 Trainer rewrote special tokens to match the tokenizer "
            f"({QWEN3_HEADLINE}) in child pid *",
        ]
    )


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_multiprocessing(children: pytest.Pytester, method: str) -> None:
    children.makepyfile(
        test_mp=f"""
        import multiprocessing

        def emit():
            import emit  # noqa: F401  (logs TG113 at import)

        def test_worker():
            process = multiprocessing.get_context({method!r}).Process(target=emit)
            process.start()
            process.join()
            assert process.exitcode == 0
        """
    )
    result = run(children)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([CHILD_LINE, "FAILED test_mp.py::test_worker (TG113)"])


def test_fork_after_transformers_is_loaded_in_the_test(children: pytest.Pytester) -> None:
    """The forked child inherits an attached guard: it writes to the spool, not to the parent's recorder."""
    children.makepyfile(
        test_fork="""
        import multiprocessing
        from transformers.utils import logging as hf_logging
        from emit_message import TG113

        def emit():
            hf_logging.get_logger("transformers.generation.utils").warning(TG113)

        def test_forked():
            process = multiprocessing.get_context("fork").Process(target=emit)
            process.start()
            process.join()
            assert process.exitcode == 0
        """,
        emit_message=f"TG113 = {TG113!r}",
    )
    result = run(children)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([CHILD_LINE, "FAILED test_fork.py::test_forked (TG113)"])


@pytest.mark.parametrize("context", [None, "spawn"])
def test_dataloader_worker(children: pytest.Pytester, context: str | None) -> None:
    children.makepyfile(
        test_loader=f"""
        import torch
        from transformers.utils import logging as hf_logging
        from emit_message import TG113

        class Rows(torch.utils.data.Dataset):
            def __len__(self):
                return 2

            def __getitem__(self, index):
                hf_logging.get_logger("transformers.generation.utils").warning(TG113)
                return index

        def test_loader():
            loader = torch.utils.data.DataLoader(Rows(), num_workers=1, multiprocessing_context={context!r})
            assert [int(batch) for batch in loader] == [0, 1]
        """,
        emit_message=f"TG113 = {TG113!r}",
    )
    result = run(children)
    result.assert_outcomes(failed=1)
    # one worker, two rows: one finding seen twice in that worker
    result.stdout.fnmatch_lines(["  phase:   call, seen 2 times", CHILD_LINE, "FAILED test_loader.py::test_loader (TG113)"])


def test_grandchild_through_a_shell(children: pytest.Pytester) -> None:
    """A child that starts a child; the middle one is not even Python (a shell): the variable carries through."""
    children.makepyfile(
        test_grand="""
        import subprocess, sys

        def test_grandchild():
            middle = f"import subprocess, sys; subprocess.run(['sh', '-c', sys.executable + ' emit.py'], check=True)"
            run = subprocess.run([sys.executable, "-c", middle], capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
            assert "EMITTED" in run.stdout
        """
    )
    result = run(children)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([CHILD_LINE, "FAILED test_grand.py::test_grandchild (TG113)"])


def test_non_python_child_is_left_alone(children: pytest.Pytester) -> None:
    children.makepyfile(
        test_shell="""
        import subprocess

        def test_shell():
            run = subprocess.run(["sh", "-c", "echo token; exit 0"], capture_output=True, text=True, check=True)
            assert run.stdout == "token\\n"
        """
    )
    result = run(children)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tokenguard: clean, 1 guarded test, no token-alignment warnings"])


def test_child_that_crashes_before_attaching(children: pytest.Pytester) -> None:
    """The child dies before it imports transformers: its own failure is the test's business; nothing hangs,
    nothing is invented."""
    children.makepyfile(
        test_crash="""
        import subprocess, sys

        def test_crash():
            run = subprocess.run([sys.executable, "-c", "raise SystemExit(3)"])
            assert run.returncode == 3
            killed = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
            assert killed.returncode == -9
        """
    )
    result = run(children)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tokenguard: clean, 1 guarded test, no token-alignment warnings"])


def test_a_failing_hook_is_reported_not_raised_in_the_child(children: pytest.Pytester) -> None:
    """The child's guard cannot attach when transformers is imported (simulated: its routing is broken): the
    child runs on, unguarded, and the test fails with TG109 naming the error."""
    children.makepyfile(
        test_hook="""
        import subprocess, sys

        CHILD = (
            "from pytest_tokenguard.guard import routing; routing.enter = None; "
            "import transformers; print('CHILD OK')"
        )

        def test_hook():
            run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
            assert run.stdout == "CHILD OK\\n"
        """
    )
    result = run(children)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG109 a child process could not be guarded",
            "  message: tokenguard could not guard child process *: TypeError: 'NoneType' object is not callable",
            "  logger:  pytest_tokenguard.children (hook, ERROR)",
            "FAILED test_hook.py::test_hook (TG109)",
        ]
    )


@pytest.mark.parametrize("how", ["option", "ini"])
def test_option_off(children: pytest.Pytester, how: str) -> None:
    children.makepyfile(
        test_off="""
        import os, subprocess, sys

        def test_off():
            run = subprocess.run([sys.executable, "emit.py"], capture_output=True, text=True, check=True)
            assert "EMITTED" in run.stdout
            assert "PYTEST_TOKENGUARD_SPOOL" not in os.environ
        """
    )
    if how == "ini":
        children.makeini("[pytest]\ntokenguard_children = no\n")
    result = run(children, *(["--tokenguard-children=no"] if how == "option" else []))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tokenguard: clean, 1 guarded test, no token-alignment warnings"])


def test_bad_option_value_is_a_usage_error(children: pytest.Pytester) -> None:
    children.makeini("[pytest]\ntokenguard_children = sometimes\n")
    children.makepyfile(test_x="def test_x():\n    pass\n")
    result = children.runpytest("--tokenguard", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: tokenguard: ini tokenguard_children must be yes or no, not 'sometimes'"])


def test_allow_expect_report_and_junit(children: pytest.Pytester, tmp_path: Path) -> None:
    """Child findings get the verdicts in-process findings get: allow markers, expect blocks, the JSON report
    (with the processes) and the JUnit properties."""
    children.makepyfile(
        test_verdicts="""
        import subprocess, sys
        import pytest

        def emit():
            subprocess.run([sys.executable, "emit.py"], check=True, capture_output=True)

        @pytest.mark.tokenguard_allow("TG113", reason="known: this tokenizer pads on the right")
        def test_allowed():
            emit()

        def test_expected(tokenguard):
            with tokenguard.expect("TG113"):
                emit()
            assert tokenguard.codes == ["TG113"]
            assert tokenguard.records[0].phase == "call"

        def test_failing():
            emit()
        """
    )
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    result = run(children, f"--tokenguard-report={report}", f"--junitxml={junit}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["tokenguard: 3 findings in 3 guarded tests (TG113 x3); 1 allowed, 1 expected, 1 failing test"])
    data = json.loads(report.read_text())
    failing = data["tests"]["test_verdicts.py::test_failing"]["findings"][0]
    (process,) = failing["details"]["processes"]
    assert process["pid"] != os.getpid() and process["rank"] is None and failing["phase"] == "call"
    assert process["host"] == spool.host()
    assert data["tests"]["test_verdicts.py::test_allowed"]["findings"][0]["allowed"] is True
    assert 'name="tokenguard:TG113" value="call x1: A decoder-only architecture' in junit.read_text()


def test_child_that_outlives_its_test(children: pytest.Pytester) -> None:
    """Started without waiting: its finding arrives after the test ended; the summary has it, attributed to
    that test, and the run fails."""
    children.makepyfile(
        test_late="""
        import subprocess, sys, time

        CHILD = []

        def test_starts_and_leaves():
            CHILD.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5); import emit"]))

        def test_later():
            assert CHILD[0].wait(timeout=120) == 0  # it reports while this test runs: not this test's finding
        """
    )
    result = run(children)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "tokenguard: 1 finding in 2 guarded tests (TG113 x1); 0 allowed, 0 expected, 1 failing test",
            "FAILED test_late.py::test_starts_and_leaves (TG113)",
            "tokenguard: 1 failing finding reported by child processes after their test ended (listed above with their test)",
        ]
    )


def test_child_started_while_the_module_is_imported(children: pytest.Pytester) -> None:
    children.makepyfile(
        test_import_time="""
        import subprocess, sys
        subprocess.run([sys.executable, "emit.py"], check=True, capture_output=True)

        def test_nothing():
            pass
        """
    )
    result = run(children)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["  phase:   collection, seen 1 time", "  process: child pid *", "FAILED test_import_time.py (TG113)"]
    )


def test_xdist_workers_each_have_their_spool(children: pytest.Pytester) -> None:
    children.makepyfile(
        test_par="""
        import subprocess, sys
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_child(n):
            subprocess.run([sys.executable, "emit.py"], check=True, capture_output=True)
        """
    )
    result = children.runpytest_subprocess("--tokenguard", "-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(["tokenguard: 4 findings in 4 guarded tests (TG113 x4); 0 allowed, 0 expected, 4 failing tests"])


def test_unwritable_spool_is_said_and_the_run_goes_on(children: pytest.Pytester) -> None:
    children.makepyfile(test_x="def test_x():\n    pass\n")
    blocker = children.path / "not-a-directory"
    blocker.write_text("")
    result = run(children, f"--tokenguard-spool={blocker}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "tokenguard: clean, 1 guarded test, no token-alignment warnings",
            f"tokenguard: WARNING child processes are not guarded: [[]Errno 17[]] File exists: '{blocker}' "
            "(--tokenguard-spool sets a writable spool directory; --tokenguard-children=no turns the child guard off)",
        ]
    )


# --- the pieces ----------------------------------------------------------------------------------------------


def test_identical_findings_of_several_ranks_are_one_finding_listing_the_ranks() -> None:
    recorder = TestRecorder({})
    for rank, pid in ((1, 41), (0, 40), (1, 41)):
        origin = {"pid": pid, "host": "node", "rank": rank, "local_rank": rank}
        recorder.add(
            "TG113", "right padding", TG113, "transformers.generation.utils", "log", "WARNING", "pad left", origin=origin
        )
    recorder.add("TG113", "right padding", TG113, "transformers.generation.utils", "log", "WARNING", "pad left")
    child, own = recorder.findings
    assert child.count == 3 and own.count == 1  # the test's own finding stays apart from the children's
    assert child.processes() == "ranks 0, 1 (pids 41, 40)"
    assert own.processes() is None
    assert headline([child]) == "tokenguard: TG113 right padding in ranks 0, 1 (3 findings)"


def test_pth_line_does_nothing_without_the_variable_and_never_breaks_a_child(tmp_path: Path) -> None:
    line = parent.pth_text(str(tmp_path / "nowhere"))
    assert line.startswith("import os; exec(") and line.count("\n") == 1  # one line: site.py executes it
    namespace: dict[str, object] = {}
    environ = dict(os.environ)
    environ.pop(spool.SPOOL_ENV, None)
    exec(line.replace("os.environ", "environ"), {"environ": environ}, namespace)
    # with the variable set but the package gone: nothing raised, nothing activated
    code = line.replace("pytest_tokenguard.children.hook", "pytest_tokenguard_uninstalled.hook")
    exec(code.replace("os.environ", "environ"), {"environ": {spool.SPOOL_ENV: str(tmp_path)}}, namespace)
    assert "pytest_tokenguard_uninstalled" not in sys.modules


def test_a_spool_of_a_dead_session_activates_nothing(tmp_path: Path) -> None:
    spool.write_session(str(tmp_path), spool.SessionInfo(pid=2**22 + 12345, host=spool.host()))
    assert spool.read_session(str(tmp_path)) is not None
    assert not spool.SessionInfo(pid=2**22 + 12345, host=spool.host()).alive()
    assert spool.SessionInfo(pid=os.getpid(), host=spool.host()).alive()
    assert spool.SessionInfo(pid=2**22 + 12345, host="another-node").alive()  # remote: the spool decides


def test_unreadable_records_are_reported_not_lost(tmp_path: Path) -> None:
    directory = str(tmp_path)
    spool.write_session(directory, spool.SessionInfo(os.getpid(), spool.host()))
    assert spool.write_record(directory, {"test": "t", "phase": "call", "origin": {}, "finding": {"code": "TG113"}})
    (tmp_path / "00000000000000000001-1-0.json").write_text("{not json")
    records = list(spool.drain(directory))
    assert records[0]["error"].startswith("unreadable spool record 00000000000000000001-1-0.json: ")
    assert records[1]["finding"] == {"code": "TG113"}
    assert sorted(os.listdir(directory)) == [spool.SESSION_FILE]
    assert not spool.write_record(str(tmp_path / "gone"), {"test": "t"})  # a spool that is gone: False, no raise
