"""One pytest session's guard: settings, per-test recorders, verdicts, and the end-of-run outputs.

``plugin.py`` creates a :class:`GuardSession` in ``pytest_configure``, keeps it in ``config.stash`` and
registers it as a plugin object for the hooks that only get a report (``pytest_runtest_logreport``,
``pytest_sessionfinish``, ``pytest_terminal_summary``); the module-level hooks there delegate here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest._code.code import TerminalRepr
from _pytest._io import TerminalWriter

from pytest_tokenguard.guard import routing
from pytest_tokenguard.guard.allowlist import MARKER, AllowError, allow_label, parse_marker, split_codes
from pytest_tokenguard.guard.baseline import BaselineError, BaselineSession, normalize
from pytest_tokenguard.guard.calls import Options
from pytest_tokenguard.guard.findings import TestRecorder, format_findings, headline
from pytest_tokenguard.guard.reporting import REPORT_ATTRIBUTE, SessionResults, TestResult, package_versions
from pytest_tokenguard.output import write_json_atomic

if TYPE_CHECKING:
    from pytest_tokenguard.guard.fixture import TokenGuard

STASH = pytest.StashKey["GuardSession"]()
_PLAN = pytest.StashKey["_Plan"]()
_RECORDER = pytest.StashKey[TestRecorder]()
_OBSERVED = pytest.StashKey[dict[str, Any]]()


class TokenguardStaleAllowWarning(pytest.PytestWarning):
    """An allow entry (marker, ini ``tokenguard_allow`` or ``--tokenguard-allow``) that matched no finding
    in the whole run."""


@dataclass(frozen=True)
class _Crash:
    message: str


class FindingsRepr(TerminalRepr):
    """The failure text, with a one-line ``reprcrash.message`` for the short summary and JUnit."""

    def __init__(self, text: str, headline: str) -> None:
        self.text = text
        self.reprcrash = _Crash(headline)

    def toterminal(self, out: TerminalWriter) -> None:
        for line in self.text.splitlines():
            out.line(line)


@dataclass(frozen=True)
class _Plan:
    """What collection decided for one guarded test: allowed codes (code -> allow label), declared labels."""

    allow: dict[str, str]
    declared: list[str]


def _flag(config: pytest.Config, name: str) -> bool:
    value = config.getoption(name)
    return bool(value) if value is not None else bool(config.getini(name))


class GuardSession:
    """The guard of one ``pytest.Config``. Raises ``pytest.UsageError`` at construction for bad options."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        flag = config.getoption("tokenguard")
        self.enabled = bool(flag) if flag is not None else bool(config.getini("tokenguard"))
        try:
            codes = split_codes(config.getini("tokenguard_allow"), "ini tokenguard_allow")
            codes += split_codes(config.getoption("tokenguard_allow"), "--tokenguard-allow")
        except AllowError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.global_allow = {code: allow_label("global", code) for code in codes}
        report = config.getoption("tokenguard_report")
        self.report_path = Path(report) if report else None
        synthesize = str(config.getini("tokenguard_synthesize")).strip().lower()
        if synthesize not in ("auto", "always", "never"):
            raise pytest.UsageError(f"tokenguard: ini tokenguard_synthesize must be auto, always or never, not {synthesize!r}")
        self.strict = _flag(config, "tokenguard_strict")
        self.state = routing.GuardState(Options(synthesize, _flag(config, "tokenguard_calls"), self.strict))
        try:
            self.baseline = BaselineSession.from_options(
                config.getoption("tokenguard_baseline"),
                bool(config.getoption("tokenguard_update_baseline")),
                bool(config.getoption("tokenguard_baseline_strict")),
                package_versions(),
            )
        except BaselineError as exc:
            raise pytest.UsageError(f"tokenguard: {exc}") from None
        self.results = SessionResults(global_allows=sorted(self.global_allow.values()))
        self.any_guarded = False
        self.baseline_lines: list[str] = []
        self.is_worker = hasattr(config, "workerinput")

    # --- collection -------------------------------------------------------------------------------------

    def plan(self, items: list[pytest.Item]) -> None:
        """Decide which tests are guarded and what each one allows (closest marker wins over the global list)."""
        if self.baseline is not None:
            self.baseline.collected.update(item.nodeid for item in items)
        for item in items:
            allow: dict[str, str] = {}
            declared: list[str] = []
            for node, mark in item.iter_markers_with_node(MARKER):
                try:
                    parsed = parse_marker(mark.args, mark.kwargs, node.nodeid or "the root conftest")
                except AllowError as exc:
                    raise pytest.UsageError(str(exc)) from None
                for code in parsed.codes:
                    label = allow_label(node.nodeid, code)
                    allow.setdefault(code, label)
                    if label not in declared:
                        declared.append(label)
            for code, label in self.global_allow.items():
                allow.setdefault(code, label)
            guarded = self.enabled or item.get_closest_marker("tokenguard") is not None
            if guarded or "tokenguard" in getattr(item, "fixturenames", ()):
                item.stash[_PLAN] = _Plan(allow, declared)
                self.any_guarded = True

    def deselected(self, items: list[pytest.Item]) -> None:
        if self.baseline is not None:
            self.baseline.deselected.update(item.nodeid for item in items)

    # --- per test -----------------------------------------------------------------------------------------

    def enter_phase(self, item: pytest.Item, phase: str) -> None:
        """Start (or continue) recording ``item`` in ``phase``; a dict lookup for unguarded tests."""
        plan = item.stash.get(_PLAN, None)
        if plan is None:
            return
        recorder = item.stash.get(_RECORDER, None)
        if recorder is None:  # setup, or a later phase whose setup hook never ran
            recorder = TestRecorder(plan.allow)
            item.stash[_RECORDER] = recorder
            routing.enter(self.state)
            routing.receive(self.state, recorder)
        recorder.phase = phase
        if self.state.options is not None:
            from pytest_tokenguard.guard import calls

            calls.ensure_installed()

    def make_report(self, item: pytest.Item, when: str, report: pytest.TestReport) -> None:
        """Turn the phase's findings into the verdict on ``report``; at teardown attach the test's result."""
        recorder = item.stash.get(_RECORDER, None)
        if recorder is None:
            return
        failing = recorder.failing(when) if recorder.findings else []
        if when == "call" and self.baseline is not None and "tokenguard" in getattr(item, "fixturenames", ()):
            observed = normalize(recorder.observed())
            item.stash[_OBSERVED] = observed
            problem = self.baseline.failure(item.nodeid, observed) if report.passed else None
            if problem is not None:
                report.outcome = "failed"
                report.longrepr = FindingsRepr(problem, problem.splitlines()[0])
        if failing:
            text = format_findings(failing)
            if report.passed:
                report.outcome = "failed"
                report.longrepr = FindingsRepr(text, headline(failing))
            else:  # the test's own failure stays the headline; the findings come with it
                report.sections.append((f"tokenguard findings ({when})", text))
        if when == "teardown":
            routing.receive(self.state, None)
            del item.stash[_RECORDER]
            plan = item.stash[_PLAN]
            result = TestResult(
                item.nodeid,
                (report.location[0], report.location[1]),
                list(recorder.findings),
                plan.declared,
                sorted(recorder.matched_allows),
                item.stash.get(_OBSERVED, None),
            )
            setattr(report, REPORT_ATTRIBUTE, result.to_report_data())
            for finding in recorder.findings:
                flag = " (allowed)" if finding.allowed else " (expected)" if finding.expected else ""
                report.user_properties.append(
                    (f"tokenguard:{finding.code}", f"{finding.phase} x{finding.count}{flag}: {finding.message}")
                )

    def fixture(self, request: pytest.FixtureRequest) -> TokenGuard:
        from pytest_tokenguard.guard.fixture import TokenGuard

        recorder = request.node.stash.get(_RECORDER, None)
        if recorder is None:
            raise pytest.UsageError("the tokenguard fixture is only available in function-scoped tests")
        return TokenGuard(recorder, strict=self.strict)

    # --- hooks of the registered session object ------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, REPORT_ATTRIBUTE, None)
        if report.user_properties:  # the bundled suite's family x step table
            findings = TestResult.from_report_data(report.nodeid, ("", None), data).findings if data else []
            self.results.suite.add_report(report.user_properties, report.outcome, findings)
        if report.when != "teardown" or data is None:
            return
        self.any_guarded = True
        location = (report.location[0], report.location[1])
        self.results.add(TestResult.from_report_data(report.nodeid, location, data))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        if self.any_guarded or self.enabled:
            for label in self.results.stale_allows():
                warnings.warn(
                    TokenguardStaleAllowWarning(f"tokenguard allow entry {label} matched nothing in this run"),
                    stacklevel=1,
                )
        if self.report_path is not None:
            write_json_atomic(self.report_path, self.results.to_json())
        if self.baseline is not None:
            observed = {nodeid: result.observed for nodeid, result in self.results.tests.items() if result.observed is not None}
            self.baseline_lines, fail = self.baseline.finish(observed)
            if fail:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.baseline is not None:
            self.baseline.collected.update(ids)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (self.any_guarded or self.enabled or self.baseline_lines) or self.is_worker:
            return
        terminalreporter.write_sep("=", "tokenguard")
        for line in self.results.summary_lines():
            terminalreporter.write_line(line)
        for line in self.results.suite.lines():
            terminalreporter.write_line(line)
        for line in self.baseline_lines:
            terminalreporter.write_line(line)
        if self.report_path is not None:
            terminalreporter.write_line(f"tokenguard: JSON report written to {self.report_path}")
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for line in self.results.github_lines():
                terminalreporter.write_line(line)

    def close(self) -> None:
        """End of the session: release the capture and call wrappers this session attached."""
        routing.leave(self.state)
