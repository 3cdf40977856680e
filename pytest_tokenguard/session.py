"""One pytest session of tokenguard: settings, which tests are guarded, verdicts, end-of-run outputs.

``plugin.py`` creates a :class:`TokenguardSession` in ``pytest_configure`` and keeps it in
``config.stash``. The session registers itself as a plugin object (its per-test hooks) only when the run
guards something, so an idle plugin adds no hook call per test. It imports the runtime guard
(``pytest_tokenguard.guard``: capture, catalog, recorder, call wrappers) only once transformers is imported
(or a test asks for the ``tokenguard`` fixture): before that, nothing transformers logs can exist.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest._code.code import ReprExceptionInfo, ReprFileLocation, ReprTracebackNative
from _pytest.nodes import Node

if TYPE_CHECKING:
    from pytest_tokenguard.children.parent import ChildGuard
    from pytest_tokenguard.guard.baseline import BaselineSession
    from pytest_tokenguard.guard.findings import RuntimeFinding, TestRecorder
    from pytest_tokenguard.guard.fixture import TokenGuard
    from pytest_tokenguard.guard.reporting import SessionResults
    from pytest_tokenguard.guard.routing import GuardState

_PLAN = pytest.StashKey["_Plan"]()
_OBSERVED = pytest.StashKey[dict[str, Any]]()
_RAISED = pytest.StashKey[list[str]]()

MARKER = "tokenguard"
ALLOW_MARKER = "tokenguard_allow"
#: the attribute of a teardown report that carries the test's result (xdist serialises it)
REPORT_ATTRIBUTE = "tokenguard"
#: the key of an xdist worker's output that carries a usage error to the controller
WORKER_USAGE_ERROR = "tokenguard_usage_error"
#: the key of an xdist worker's output that carries child findings drained after their test ended
WORKER_LATE_RESULTS = "tokenguard_late_results"
#: what ``--tokenguard-children`` / ini ``tokenguard_children`` accept
CHILDREN_VALUES = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}


class TokenguardStaleAllowWarning(pytest.PytestWarning):
    """An allow entry (marker, ini ``tokenguard_allow`` or ``--tokenguard-allow``) that matched no finding
    in the whole run."""


def findings_repr(text: str, headline: str, location: tuple[str, int | None]) -> ReprExceptionInfo:
    """A failure whose text is ``text`` and whose one-line message (short summary, JUnit ``message``) is
    ``headline``. Built from pytest's own exception representation so that xdist carries both across."""
    lines = [line + "\n" for line in text.splitlines()]
    path, lineno = location
    return ReprExceptionInfo(
        reprtraceback=ReprTracebackNative(lines), reprcrash=ReprFileLocation(path, (lineno or 0) + 1, headline)
    )


@dataclass(frozen=True)
class _Plan:
    """What collection decided for one guarded test."""

    #: code -> label of the allow entry that covers it (closest marker first, then the global list)
    allow: dict[str, str]
    #: labels of the allow markers on this test and its parents (for stale-entry reporting)
    declared: tuple[str, ...]
    #: the test requests the ``tokenguard`` fixture
    fixture: bool


def _node_location(node: Node) -> tuple[str, int]:
    """File and 1-based line of a test, class or module (where its allow marker is written)."""
    reportinfo = getattr(node, "reportinfo", None)
    try:
        path, lineno, _ = reportinfo() if reportinfo is not None else (node.path, None, "")
    except Exception:  # a plugin's node type may not report its location
        return (str(node.path), 0)
    return (str(path), lineno + 1 if lineno is not None else 0)


def skip_assertion_rewriting(pluginmanager: pytest.PytestPluginManager) -> None:
    """Keep pytest from assertion-rewriting the plugin's own modules.

    pytest marks every module of a ``pytest11`` distribution for rewriting; each is then parsed and
    recompiled on import, which is wasted work for code that holds no test assertions, and is paid on every
    run where bytecode is not written (``PYTHONDONTWRITEBYTECODE``, read-only site-packages): ~4 ms a
    module. The bundled suite (``suite/test_*.py``) is still rewritten: it matches ``python_files``.
    """
    hook = getattr(pluginmanager, "rewrite_hook", None)
    marked = getattr(hook, "_must_rewrite", None)  # pytest's private set; left alone if it changes shape
    if isinstance(marked, set) and "pytest_tokenguard" in marked:
        marked.discard("pytest_tokenguard")
        marked.add("pytest_tokenguard.suite.support")  # the suite's helpers assert, with pytest's messages


def _nothing() -> None:
    return None


def _flag(config: pytest.Config, name: str) -> bool:
    value = config.getoption(name)
    return bool(value) if value is not None else bool(config.getini(name))


class _TransformersImport:
    """A ``sys.meta_path`` entry that attaches the guard when ``import transformers`` starts (before any
    transformers logger exists), then removes itself. It finds nothing itself."""

    def __init__(self, session: TokenguardSession) -> None:
        self.session = session

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "transformers" or name.startswith("transformers."):
            self.session.attach()
        return None


class _ControllerReports:
    """Registered on xdist's controller only: reports from the workers carry their tests' results."""

    def __init__(self, session: TokenguardSession) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.session._controller_logreport(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        data = getattr(report, REPORT_ATTRIBUTE, None)
        if data:  # findings while a worker imported a test module
            from pytest_tokenguard.guard.reporting import TestResult

            self.session.any_guarded = True
            self.session.results.add(TestResult.from_report_data(report.nodeid, (report.nodeid, None), data))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {})
        late = output.get(WORKER_LATE_RESULTS)
        if late:
            from pytest_tokenguard.guard.reporting import TestResult

            for nodeid, (location, data) in late.items():
                self.session._merge_late(TestResult.from_report_data(nodeid, (location[0], location[1]), data))
        message = output.get(WORKER_USAGE_ERROR)
        if message:  # what the run says without xdist: the same message, exit status 4
            self.session.usage_error = True
            raise pytest.UsageError(message)


class TokenguardSession:
    """tokenguard's state for one ``pytest.Config``. Raises ``pytest.UsageError`` at construction for bad
    options (unknown codes, ini values, baseline files)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        flag = config.getoption("tokenguard")
        self.enabled = bool(flag) if flag is not None else bool(config.getini("tokenguard"))
        self.global_allow: dict[str, str] = {}
        #: allow label -> (file, line) where the entry is written, for the stale-entry warning
        self.allow_locations: dict[str, tuple[str, int]] = {}
        #: stale entries reported as errors (warnings are errors in this run)
        self.stale_errors: list[str] = []
        allow_ini, allow_cli = config.getini("tokenguard_allow"), config.getoption("tokenguard_allow")
        if allow_ini or allow_cli:
            from pytest_tokenguard.guard.allowlist import AllowError, allow_label, split_codes

            try:
                codes = split_codes(allow_ini, "ini tokenguard_allow") + split_codes(allow_cli, "--tokenguard-allow")
            except AllowError as exc:
                raise pytest.UsageError(str(exc)) from None
            self.global_allow = {code: allow_label("global", code) for code in codes}
            where = self._ini_location(config, "tokenguard_allow") if allow_ini else ("--tokenguard-allow", 0)
            self.allow_locations.update({label: where for label in self.global_allow.values()})
        report = config.getoption("tokenguard_report")
        self.report_path = Path(report) if report else None
        self.synthesize = str(config.getini("tokenguard_synthesize")).strip().lower()
        if self.synthesize not in ("auto", "always", "never"):
            raise pytest.UsageError(
                f"tokenguard: ini tokenguard_synthesize must be auto, always or never, not {self.synthesize!r}"
            )
        self.strict = _flag(config, "tokenguard_strict")
        self.calls = _flag(config, "tokenguard_calls")
        self.baseline = self._load_baseline(config)
        self.children_on = self._children_option(config)
        spool_base = config.getoption("tokenguard_spool") or config.getini("tokenguard_spool")
        self.spool_base = Path(spool_base) if spool_base else None
        #: the child-process guard, started at the first guarded test (None: off, not yet, or failed)
        self.children: ChildGuard | None = None
        self._children_started = False
        #: why child processes are not guarded although asked for (the summary says it)
        self.children_problem: str | None = None
        #: spool records of tests that had ended when they were drained
        self.late: list[dict[str, Any]] = []
        self.late_failing = 0
        self.is_worker = hasattr(config, "workerinput")
        # xdist's controller runs no test: its results arrive as reports from the workers
        self.is_controller = not self.is_worker and getattr(config.option, "dist", "no") != "no"
        #: a teardown report carries data even for a clean test (the controller or the JSON report counts it)
        self.data_for_every_test = self.is_worker or self.report_path is not None
        self.guarded = 0
        self.any_guarded = False
        self.usage_error = False
        self.baseline_lines: list[str] = []
        self._results: SessionResults | None = None
        self._registered = False
        self._trigger: _TransformersImport | None = None
        #: the guarded test now running, and the phase
        self.current: pytest.Item | None = None
        #: the test module being imported (collected) under --tokenguard
        self.collecting: pytest.Module | None = None
        self.phase = "setup"
        # created when transformers is imported or the fixture is requested
        self.recorder: TestRecorder | None = None
        self.state: GuardState | None = None
        self._follow_logger_class: Callable[[], None] = _nothing

    @staticmethod
    def _children_option(config: pytest.Config) -> bool:
        value = config.getoption("tokenguard_children")
        where = "--tokenguard-children"
        if value is None:
            value, where = str(config.getini("tokenguard_children")), "ini tokenguard_children"
        choice = CHILDREN_VALUES.get(str(value).strip().lower())
        if choice is None:
            raise pytest.UsageError(f"tokenguard: {where} must be yes or no, not {value!r}")
        return choice

    @staticmethod
    def _load_baseline(config: pytest.Config) -> BaselineSession | None:
        path = config.getoption("tokenguard_baseline")
        update, strict = config.getoption("tokenguard_update_baseline"), config.getoption("tokenguard_baseline_strict")
        if not (path or update or strict):
            return None
        from pytest_tokenguard.guard.baseline import BaselineError, BaselineSession
        from pytest_tokenguard.guard.reporting import package_versions

        try:
            return BaselineSession.from_options(path, bool(update), bool(strict), package_versions())
        except BaselineError as exc:
            raise pytest.UsageError(f"tokenguard: {exc}") from None

    def start(self) -> None:
        """At configure: hook in now when every test is guarded or the run writes outputs anyway."""
        if self.enabled or self.is_controller or self.report_path is not None or self.baseline is not None:
            self._register()

    def _register(self) -> None:
        if not self._registered:
            self._registered = True
            self.config.pluginmanager.register(self, "tokenguard-session")
            if self.is_controller:  # only there: a hook call per report is not free
                self.config.pluginmanager.register(_ControllerReports(self), "tokenguard-controller")

    @property
    def results(self) -> SessionResults:
        if self._results is None:
            from pytest_tokenguard.guard.reporting import SessionResults

            self._results = SessionResults(global_allows=sorted(self.global_allow.values()))
        return self._results

    # --- collection -------------------------------------------------------------------------------------

    def plan(self, items: list[pytest.Item]) -> None:
        """Decide which tests are guarded and what each one allows (closest marker wins over the global list).

        Costs one keyword lookup per test when nothing is guarded. Raises ``pytest.UsageError`` for a bad
        allow marker; on an xdist worker the message goes to the controller instead (which raises it), and the
        worker runs nothing.
        """
        try:
            self._plan(items)
        except pytest.UsageError as exc:
            if not self.is_worker:
                raise
            self.config.workeroutput[WORKER_USAGE_ERROR] = str(exc)  # type: ignore[attr-defined]
            items[:] = []

    def _plan(self, items: list[pytest.Item]) -> None:
        if self.baseline is not None:
            self.baseline.collected.update(item.nodeid for item in items)
        enabled = self.enabled
        planned = False
        for item in items:
            keywords = item.keywords
            has_allow = ALLOW_MARKER in keywords
            fixture = "tokenguard" in getattr(item, "fixturenames", ())
            if not (enabled or fixture or has_allow or MARKER in keywords):
                continue
            allow, declared = self._allow_entries(item) if has_allow else ({}, ())
            if not (enabled or fixture or item.get_closest_marker(MARKER) is not None):
                continue  # an allow marker alone guards nothing (it was still checked above)
            for code, label in self.global_allow.items():
                allow.setdefault(code, label)  # a marker is closer than the global list
            item.stash[_PLAN] = _Plan(allow, declared, fixture)
            planned = True
        if planned:
            self.any_guarded = True
            self._register()

    @staticmethod
    def _ini_location(config: pytest.Config, name: str) -> tuple[str, int]:
        """The ini file and the line that sets ``name`` (line 0 when it cannot be found)."""
        path = config.inipath
        if path is None:
            return ("ini", 0)
        try:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip().startswith(name):
                    return (str(path), number)
        except (OSError, UnicodeDecodeError):
            pass
        return (str(path), 0)

    def _allow_entries(self, node: pytest.Item | pytest.Collector) -> tuple[dict[str, str], tuple[str, ...]]:
        from pytest_tokenguard.guard.allowlist import AllowError, allow_label, parse_marker

        allow: dict[str, str] = {}
        declared: list[str] = []
        for owner, mark in node.iter_markers_with_node(ALLOW_MARKER):
            try:
                parsed = parse_marker(mark.args, mark.kwargs, owner.nodeid or "the root conftest")
            except AllowError as exc:
                raise pytest.UsageError(str(exc)) from None
            for code in parsed.codes:
                label = allow_label(owner.nodeid, code)
                allow.setdefault(code, label)  # closest marker wins
                if label not in declared:
                    declared.append(label)
                    if label not in self.allow_locations:
                        self.allow_locations[label] = _node_location(owner)
        return allow, tuple(declared)

    def deselected(self, items: list[pytest.Item]) -> None:
        if self.baseline is not None:
            self.baseline.deselected.update(item.nodeid for item in items)

    # --- the guard ----------------------------------------------------------------------------------------

    def attach(self) -> None:
        """Load the runtime guard and route what transformers logs to this session's recorder. Idempotent;
        called when transformers is (being) imported."""
        if self._trigger is not None:
            self._remove_trigger()
        if self.state is not None:
            return
        from pytest_tokenguard.guard import routing
        from pytest_tokenguard.guard.calls import Options

        recorder = self._ensure_recorder()
        from pytest_tokenguard.guard import capture

        self._follow_logger_class = capture.follow_logger_class  # per test: no import statement on the hot path
        self.state = routing.GuardState(Options(self.synthesize, self.calls, self.strict))
        routing.enter(self.state)
        routing.receive(self.state, recorder)

    def _ensure_recorder(self) -> TestRecorder:
        if self.recorder is None:
            from pytest_tokenguard.guard.findings import TestRecorder

            self.recorder = TestRecorder(strict=self.strict)
            if self.children is not None:
                self.recorder.pull = self._pull_children
            self.recorder.end()
            if self.current is not None:
                self.recorder.begin(self.current.stash[_PLAN].allow, self.phase)
            elif self.collecting is not None:
                self.recorder.begin({}, "collection")
        return self.recorder

    def _start_children(self) -> None:
        """At the first guarded test or module: the spool, the ``.pth`` file and the variables (once)."""
        self._children_started = True
        if not self.children_on or self.is_controller:
            return
        from pytest_tokenguard.children import parent, spool

        base = self.spool_base
        if base is None:
            factory = getattr(self.config, "_tmp_path_factory", None)  # None under -p no:tmpdir
            base = factory.getbasetemp() if factory is not None else Path(tempfile.gettempdir())
        info = spool.SessionInfo(os.getpid(), spool.host(), self.synthesize, self.calls, self.strict)
        guard = parent.ChildGuard(base, info, shared=self.spool_base is not None)
        try:
            guard.start()
        except OSError as exc:
            self.children_problem = (
                f"child processes are not guarded: {exc} (--tokenguard-spool sets a writable spool directory; "
                "--tokenguard-children=no turns the child guard off)"
            )
            return
        self.children = guard

    def _drain_children(self, nodeid: str) -> None:
        """Findings children left (the caller polled): those of ``nodeid`` (running) go to its recorder, the
        rest are late."""
        assert self.children is not None
        records = self.children.drain()
        if not records:
            return
        from pytest_tokenguard.children.parent import add_record

        recorder = None
        for record in records:
            if record.get("test") == nodeid:
                recorder = recorder or self._ensure_recorder()
                add_record(recorder, record)
            else:
                self.late.append(record)

    def _pull_children(self) -> None:
        """``tokenguard.expect`` / the fixture's reads: what children reported so far belongs to the block."""
        if self.children is not None and self.current is not None and self.children.pending():
            self._drain_children(self.current.nodeid)

    def _attach_when_transformers_is_imported(self) -> None:
        """Attach now if transformers is loaded; else the moment ``import transformers`` starts."""
        if "transformers" in sys.modules:
            self.attach()
        elif self._trigger is None:
            self._trigger = _TransformersImport(self)
            sys.meta_path.insert(0, self._trigger)

    def _remove_trigger(self) -> None:
        trigger, self._trigger = self._trigger, None
        if trigger in sys.meta_path:
            sys.meta_path.remove(trigger)

    # --- per test (hooks of the registered session object) ------------------------------------------------

    def _enter(self, item: pytest.Item, phase: str) -> None:
        self.phase = phase
        if item is self.current:
            if self.recorder is not None:
                self.recorder.phase = phase
            return
        stash = item.stash
        # `in` before `[]`: Stash.get raises and catches a KeyError on a miss, a microsecond per unguarded test
        plan = stash[_PLAN] if _PLAN in stash else None
        if plan is not None:  # setup, or a later phase whose setup hook never ran
            self.current = item
            if not self._children_started:
                self._start_children()
            if self.children is not None:
                self.children.running(item.nodeid)
            if self.state is None:
                self._attach_when_transformers_is_imported()
            if self.recorder is not None:
                self.recorder.begin(plan.allow, phase)
            if self.state is not None:
                self._follow_logger_class()
            if self.state is not None and self.calls:
                from pytest_tokenguard.guard import calls

                calls.ensure_installed()
        elif self.children is not None:  # an unguarded test: what it starts is not this session's to guard
            self.children.idle()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        """Under --tokenguard, a finding while a test module is imported fails that module's collection (as an
        import error would); the module's allow markers (``pytestmark``) apply."""
        if not (self.enabled and isinstance(collector, pytest.Module)):
            return (yield)
        self.collecting = collector
        if not self._children_started:
            self._start_children()
        if self.children is not None:
            self.children.running(collector.nodeid)
        if self.state is None:
            self._attach_when_transformers_is_imported()
        if self.recorder is not None:
            self.recorder.begin({}, "collection")
        try:
            report = yield
        finally:
            if self.children is not None:
                if self.children.pending():
                    self._drain_children(collector.nodeid)
                self.children.idle()
            self.collecting = None
        recorder = self.recorder
        if recorder is not None and recorder.active:
            recorder.end()
            if recorder.findings:
                self._collection_findings(collector, recorder, report)
        return report

    def _collection_findings(self, module: pytest.Module, recorder: TestRecorder, report: pytest.CollectReport) -> None:
        from pytest_tokenguard.guard.reporting import TestResult

        allow, declared = self._allow_entries(module) if report.passed else ({}, ())
        for code, label in self.global_allow.items():
            allow.setdefault(code, label)
        matched = set()
        for finding in recorder.findings:  # the markers are known only now that the module is imported
            finding.allowed_by = allow.get(finding.code)
            if finding.allowed_by is not None:
                matched.add(finding.allowed_by)
        failing = [finding for finding in recorder.findings if finding.failing]
        location = (str(module.path), None)
        if failing:
            self._fail("collection", report, failing, location)
        result = TestResult(module.nodeid, location, list(recorder.findings), list(declared), sorted(matched))
        self.any_guarded = True
        if self.is_worker:  # the controller counts it from the report
            setattr(report, REPORT_ATTRIBUTE, result.to_report_data())
        else:
            self.results.add(result)

    # A plain tryfirst impl (not a wrapper): it runs before the runner sets up fixtures, which is all that is
    # needed. The later phases begin where the previous phase's report is made (see _report): pytest runs the
    # call only after a passed setup, and the teardown next, so two hook calls per test are saved.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self._enter(item, "setup")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if item is self.current:
            if call.excinfo is not None:
                self._raised(item, call.excinfo.value, report)
            self._report(item, call.when, report)
        return report

    def _raised(self, item: pytest.Item, error: BaseException, report: pytest.TestReport) -> None:
        """Count an exception that is a tokenguard failure: ``TokenAlignmentError`` (its failing codes), a
        transformers error the catalog knows (e.g. TG145), or a bundled-suite step that failed on codes it
        marked failing (``TG206!``)."""
        codes: set[str] = set()
        if report.user_properties:
            from pytest_tokenguard.suite.table import SUITE_CODES_PROPERTY

            for name, value in report.user_properties:
                if name == SUITE_CODES_PROPERTY:
                    codes.update(code.rstrip("!") for code in str(value).split(",") if code.endswith("!"))
        failing = getattr(error, "failing", None)
        if type(error).__name__ == "TokenAlignmentError" and isinstance(failing, list):
            codes.update(str(getattr(finding, "code", "")) for finding in failing)
        else:
            from pytest_tokenguard.guard.catalog import classify_raised

            code = classify_raised(str(error))
            if code is not None:
                codes.add(code)
        if codes:
            item.stash[_RAISED] = sorted(codes | set(item.stash[_RAISED] if _RAISED in item.stash else ()))

    def _report(self, item: pytest.Item, when: str, report: pytest.TestReport) -> None:
        """Turn the phase's findings into the verdict on ``report``; at teardown close the test."""
        children = self.children
        if children is not None and children.pending():
            self._drain_children(item.nodeid)
        recorder = self.recorder
        if recorder is not None:
            if when == "call" and self.baseline is not None and item.stash[_PLAN].fixture:
                self._compare_baseline(item, recorder, report)
            if recorder.findings:
                failing = recorder.failing(when)
                if failing:
                    self._fail(when, report, failing, (report.location[0], report.location[1]))
        if when == "teardown":
            self._finish_test(item, item.stash[_PLAN], report)
        else:  # the next phase starts now: the call after a passed setup, else the teardown
            self.phase = "call" if when == "setup" and report.passed else "teardown"
            if recorder is not None:
                recorder.phase = self.phase
        if report.user_properties and not self.is_worker:  # in-process; the controller sees worker reports
            self._suite_table(report, getattr(report, REPORT_ATTRIBUTE, None))

    def _compare_baseline(self, item: pytest.Item, recorder: TestRecorder, report: pytest.TestReport) -> None:
        from pytest_tokenguard.guard.baseline import normalize

        assert self.baseline is not None
        observed = normalize(recorder.observed())
        item.stash[_OBSERVED] = observed
        problem = self.baseline.failure(item.nodeid, observed) if report.passed else None
        if problem is not None:
            report.outcome = "failed"
            report.longrepr = findings_repr(problem, problem.splitlines()[0], (report.location[0], report.location[1]))

    @staticmethod
    def _fail(
        when: str,
        report: pytest.TestReport | pytest.CollectReport,
        failing: list[RuntimeFinding],
        location: tuple[str, int | None],
    ) -> None:
        from pytest_tokenguard.guard.findings import format_findings, headline

        text = format_findings(failing)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = findings_repr(text, headline(failing), location)
        else:  # the test's own failure stays the headline; the findings come with it
            report.sections.append((f"tokenguard findings ({when})", text))

    def _finish_test(self, item: pytest.Item, plan: _Plan, report: pytest.TestReport) -> None:
        self.current = None
        recorder = self.recorder
        stash = item.stash
        observed = stash[_OBSERVED] if _OBSERVED in stash else None  # no Stash.get: it raises on a miss
        raised = stash[_RAISED] if _RAISED in stash else []
        if recorder is not None:
            recorder.end()
        if not self.is_worker:
            self.guarded += 1
        if not (
            (recorder is not None and recorder.findings)
            or raised
            or plan.declared
            or observed is not None
            or self.data_for_every_test
        ):
            return  # a clean test: nothing to carry, nothing to serialise
        from pytest_tokenguard.guard.reporting import TestResult

        findings = list(recorder.findings) if recorder is not None else []

        matched = sorted(recorder.matched_allows) if recorder is not None else []
        location = (report.location[0], report.location[1])
        result = TestResult(item.nodeid, location, findings, list(plan.declared), matched, observed, raised)
        result.allow_locations = {label: self.allow_locations[label] for label in plan.declared if label in self.allow_locations}
        setattr(report, REPORT_ATTRIBUTE, result.to_report_data())
        for finding in findings:
            flag = " (allowed)" if finding.allowed else " (expected)" if finding.expected else ""
            report.user_properties.append(
                (f"tokenguard:{finding.code}", f"{finding.phase} x{finding.count}{flag}: {finding.message}")
            )
        if not self.is_worker:
            self.results.add(result)

    def fixture(self, request: pytest.FixtureRequest) -> TokenGuard:
        """The ``tokenguard`` fixture's object for the running test. Raises ``pytest.UsageError`` outside a
        function-scoped test."""
        from pytest_tokenguard.guard.fixture import TokenGuard

        node = request.node
        if not isinstance(node, pytest.Item) or node is not self.current or _PLAN not in node.stash:
            raise pytest.UsageError("the tokenguard fixture is only available in function-scoped tests")
        return TokenGuard(self._ensure_recorder(), strict=self.strict)

    def _controller_logreport(self, report: pytest.TestReport) -> None:
        """xdist's controller: the results of the workers' tests arrive as reports."""
        data = getattr(report, REPORT_ATTRIBUTE, None)
        if report.user_properties:
            self._suite_table(report, data)
        if report.when == "teardown" and data is not None:
            from pytest_tokenguard.guard.reporting import TestResult

            self.any_guarded = True
            self.guarded += 1
            if data:
                self.results.add(TestResult.from_report_data(report.nodeid, (report.location[0], report.location[1]), data))

    def _suite_table(self, report: pytest.TestReport, data: dict[str, Any] | None) -> None:
        from pytest_tokenguard.suite.table import SUITE_PROPERTY

        if not any(name == SUITE_PROPERTY for name, _ in report.user_properties):
            return
        from pytest_tokenguard.guard.reporting import TestResult

        findings = TestResult.from_report_data(report.nodeid, ("", None), data).findings if data else []
        self.results.suite.add_report(report.user_properties, report.outcome, findings)

    # --- end of the run -------------------------------------------------------------------------------------

    def _finish_children(self, session: pytest.Session) -> None:
        """End of the run: drain the spool one last time, remove it and the ``.pth`` file; what arrived after
        its test ended is judged with that test's allow entries and added to its result."""
        children, self.children = self.children, None
        if children is None:
            return
        self.late.extend(children.stop())
        if not self.late:
            return
        from pytest_tokenguard.children.parent import add_record
        from pytest_tokenguard.guard.findings import TestRecorder
        from pytest_tokenguard.guard.reporting import TestResult

        items = {item.nodeid: item for item in session.items}
        by_test: dict[str, list[dict[str, Any]]] = {}
        for record in self.late:
            by_test.setdefault(str(record.get("test") or "(no test running)"), []).append(record)
        self.late = []
        late: dict[str, TestResult] = {}
        for nodeid, records in by_test.items():
            item = items.get(nodeid)
            if item is not None and _PLAN in item.stash:
                allow, location = item.stash[_PLAN].allow, (item.location[0], item.location[1])
            else:  # a test module (collection), or no test at all
                allow, location = self.global_allow, (nodeid.split("::")[0], None)
            recorder = TestRecorder(allow, strict=self.strict)
            recorder.phase = "teardown"
            for record in records:
                add_record(recorder, record, after_test=True)
            late[nodeid] = TestResult(nodeid, location, recorder.findings, [], sorted(recorder.matched_allows))
        if self.is_worker:  # the controller merges them (pytest_testnodedown)
            output = {nodeid: (list(result.location), result.to_report_data()) for nodeid, result in late.items()}
            self.config.workeroutput[WORKER_LATE_RESULTS] = output  # type: ignore[attr-defined]
        else:
            for result in late.values():
                self._merge_late(result)

    def _merge_late(self, result: Any) -> None:
        """Add findings reported after their test ended to that test's result (the summary lists them)."""
        self.any_guarded = True
        self.late_failing += sum(1 for finding in result.findings if finding.failing)
        existing = self.results.tests.get(result.nodeid)
        if existing is None:
            self.results.add(result)
        else:
            existing.findings.extend(result.findings)
            existing.matched_allows = sorted(set(existing.matched_allows) | set(result.matched_allows))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._finish_children(session)
        if self.is_worker:
            return
        if self.late_failing and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self._results is None and not (self.global_allow or self.report_path or self.baseline):
            return  # every guarded test was clean and nothing is written: the summary needs only the count
        if session.exitstatus == pytest.ExitCode.USAGE_ERROR:
            return  # the usage error is the whole story
        self.results.guarded = self.guarded
        # Outputs first: nothing below may keep them from being written.
        if self.report_path is not None:
            from pytest_tokenguard.output import write_json_atomic

            write_json_atomic(self.report_path, self.results.to_json())
        if self.baseline is not None:
            observed = {nodeid: result.observed for nodeid, result in self.results.tests.items() if result.observed is not None}
            self.baseline_lines, fail = self.baseline.finish(observed)
            if fail:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.any_guarded or self.enabled:
            self._warn_stale(session)

    def _warn_stale(self, session: pytest.Session) -> None:
        """One ``TokenguardStaleAllowWarning`` per unused allow entry, located where the entry is written.
        Where warnings are errors (``-W error``, ``filterwarnings = error``) each is an error of the run:
        listed in the summary, exit status 1, and every output still written."""
        locations = dict(self.allow_locations)
        for result in self.results.tests.values():
            locations.update({label: (path, line) for label, (path, line) in result.allow_locations.items()})
        for label in self.results.stale_allows():
            path, line = locations.get(label, ("<tokenguard>", 0))
            message = f"tokenguard allow entry {label} matched nothing in this run"
            try:
                warnings.warn_explicit(TokenguardStaleAllowWarning(message), TokenguardStaleAllowWarning, path, line)
            except TokenguardStaleAllowWarning:
                self.stale_errors.append(f"{path}:{line}: {message}")
        if self.stale_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.baseline is not None:
            self.baseline.collected.update(ids)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
        if not (self.any_guarded or self.enabled or self.baseline_lines) or self.is_worker:
            return
        if exitstatus == pytest.ExitCode.USAGE_ERROR or self.usage_error:
            return  # nothing but the usage error
        terminalreporter.write_sep("=", "tokenguard")
        if self._results is None:
            from pytest_tokenguard.output import clean_summary

            terminalreporter.write_line(clean_summary(self.guarded))
        else:
            for line in self.results.summary_lines():
                terminalreporter.write_line(line)
            for line in self.results.suite.lines():
                terminalreporter.write_line(line)
        for line in self.baseline_lines:
            terminalreporter.write_line(line)
        for line in self.stale_errors:
            terminalreporter.write_line(f"tokenguard: ERROR stale allow entry (warnings are errors): {line}")
        if self.late_failing:
            terminalreporter.write_line(
                f"tokenguard: {self.late_failing} failing finding{'s' if self.late_failing != 1 else ''} "
                "reported by child processes after their test ended (listed above with their test)"
            )
        if self.children_problem is not None:
            terminalreporter.write_line(f"tokenguard: WARNING {self.children_problem}")
        if self.report_path is not None:
            terminalreporter.write_line(f"tokenguard: JSON report written to {self.report_path}")
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for line in self.results.github_lines():
                terminalreporter.write_line(line)

    def close(self) -> None:
        """End of the session: release the capture and call wrappers this session attached, and the child
        guard if the session ended before its finish (a usage error)."""
        if self.children is not None:
            self.children.stop()
            self.children = None
        self._remove_trigger()
        if self.state is not None:
            from pytest_tokenguard.guard import routing

            routing.leave(self.state)
            self.state = None
