"""pytest hooks of tokenguard. Logic lives in the modules next to this one."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import TerminalRepr
from _pytest._io import TerminalWriter

from . import baseline, capture, runtime_checks, zoo
from .allowlist import MARKER, AllowError, allow_label, parse_marker, split_codes
from .findings import TestRecorder, format_findings, headline
from .fixture import TokenGuard
from .reporting import REPORT_ATTRIBUTE, SessionResults, TestResult, package_versions, write_json_atomic
from .suite_support import checkpoint_problem


class TokenguardStaleAllowWarning(pytest.PytestWarning):
    """An allow entry that matched no finding in the whole run."""


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


@dataclass
class _State:
    enabled: bool
    global_allow: dict[str, str]
    report_path: Path | None
    strict: bool = False
    baseline: _Baseline | None = None
    results: SessionResults = field(default_factory=SessionResults)
    any_guarded: bool = False


@dataclass
class _Baseline:
    path: Path
    #: entries of the existing file (None: no file yet, this run records it)
    entries: dict[str, dict[str, Any]] | None
    update: bool
    strict: bool
    versions: dict[str, Any]
    collected: set[str] = field(default_factory=set)
    deselected: set[str] = field(default_factory=set)

    @property
    def comparing(self) -> bool:
        return self.entries is not None and not self.update


@dataclass(frozen=True)
class _Plan:
    allow: dict[str, str]
    declared: list[str]


STATE = pytest.StashKey[_State]()
PLAN = pytest.StashKey[_Plan]()
RECORDER = pytest.StashKey[TestRecorder]()
OBSERVED = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tokenguard", "fail tests on transformers special-token warnings")
    group.addoption(
        "--tokenguard", action="store_true", default=None,
        help="fail each test during which transformers warns about bos/eos/pad alignment (ini: tokenguard)",
    )
    group.addoption(
        "--tokenguard-allow", action="append", default=[], metavar="CODE[,CODE]",
        help="allow these codes in every test (ini: tokenguard_allow)",
    )
    group.addoption("--tokenguard-report", metavar="PATH", help="write the findings of every guarded test as JSON")
    group.addoption(
        "--tokenguard-strict", action="store_true", default=None,
        help="warning-severity TG2xx findings fail too (tokenguard.check, --tokenguard-calls) (ini: tokenguard_strict)",
    )
    group.addoption(
        "--tokenguard-calls", action="store_true", default=None,
        help="check the objects at every Trainer.train() and generate() call (ini: tokenguard_calls)",
    )
    group.addoption(
        "--tokenguard-model", metavar="PATH",
        help="run the bundled suite (--pyargs pytest_tokenguard.suite) on this local checkpoint folder instead of the zoo",
    )
    group.addoption("--tokenguard-adapter", metavar="PATH", help="with --tokenguard-model: a local peft adapter folder")
    group.addoption(
        "--tokenguard-baseline", metavar="PATH",
        help="record (when PATH does not exist) or compare the token behaviour of tests that use the tokenguard fixture",
    )
    group.addoption("--tokenguard-update-baseline", action="store_true", help="rewrite the baseline with this run")
    group.addoption("--tokenguard-baseline-strict", action="store_true",
                    help="fail the run when the baseline has entries for tests that no longer exist")
    parser.addini("tokenguard", type="bool", default=False, help="enable tokenguard for every test")
    parser.addini("tokenguard_allow", type="linelist", default=[], help="codes allowed in every test")
    parser.addini("tokenguard_strict", type="bool", default=False, help="warning-severity TG2xx findings fail too")
    parser.addini("tokenguard_calls", type="bool", default=False, help="check objects at Trainer.train() and generate()")
    parser.addini(
        "tokenguard_synthesize", default="auto",
        help="auto: synthesize TG101 at Trainer.train() where the installed Trainer does not align tokens "
             "(transformers < 4.56); always; never",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tokenguard: guard this test (or class, module) without --tokenguard")
    config.addinivalue_line(
        "markers", f'{MARKER}(*codes, reason): allow these tokenguard codes here, e.g. {MARKER}("TG101", reason="...")'
    )
    flag = config.getoption("tokenguard")
    enabled = bool(flag) if flag is not None else bool(config.getini("tokenguard"))
    try:
        codes = split_codes(config.getini("tokenguard_allow"), "ini tokenguard_allow")
        codes += split_codes(config.getoption("tokenguard_allow"), "--tokenguard-allow")
    except AllowError as exc:
        raise pytest.UsageError(str(exc)) from None
    report = config.getoption("tokenguard_report")
    _check_checkpoint_options(config)
    synthesize = str(config.getini("tokenguard_synthesize")).strip().lower()
    if synthesize not in ("auto", "always", "never"):
        raise pytest.UsageError(f"tokenguard: ini tokenguard_synthesize must be auto, always or never, not {synthesize!r}")
    strict = _flag(config, "tokenguard_strict")
    runtime_checks.configure(runtime_checks.Options(synthesize, _flag(config, "tokenguard_calls"), strict))
    state = _State(enabled, {code: allow_label("global", code) for code in codes}, Path(report) if report else None,
                   strict, _load_baseline(config))
    state.results.global_allows = sorted(state.global_allow.values())
    config.stash[STATE] = state
    config.pluginmanager.register(_SessionHooks(config), "tokenguard-session")


def _load_baseline(config: pytest.Config) -> _Baseline | None:
    path = config.getoption("tokenguard_baseline")
    if not path:
        if config.getoption("tokenguard_update_baseline") or config.getoption("tokenguard_baseline_strict"):
            raise pytest.UsageError("tokenguard: --tokenguard-update-baseline/--tokenguard-baseline-strict need "
                                    "--tokenguard-baseline PATH")
        return None
    try:
        entries = baseline.load(Path(path))
    except baseline.BaselineError as exc:
        raise pytest.UsageError(f"tokenguard: {exc}") from None
    versions = {name: package_versions().get(name) for name in baseline.VERSION_PACKAGES}
    return _Baseline(Path(path), entries, bool(config.getoption("tokenguard_update_baseline")),
                     bool(config.getoption("tokenguard_baseline_strict")), versions)


def _check_checkpoint_options(config: pytest.Config) -> None:
    model, adapter = config.getoption("tokenguard_model"), config.getoption("tokenguard_adapter")
    if adapter and not model:
        raise pytest.UsageError("tokenguard: --tokenguard-adapter needs --tokenguard-model")
    if model:
        problem = checkpoint_problem(model, adapter)
        if problem:
            raise pytest.UsageError(f"tokenguard: {problem}")


def _flag(config: pytest.Config, name: str) -> bool:
    value = config.getoption(name)
    return bool(value) if value is not None else bool(config.getini(name))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[STATE]
    if state.baseline is not None:
        state.baseline.collected.update(item.nodeid for item in items)
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
                allow.setdefault(code, label)  # closest marker wins
                if label not in declared:
                    declared.append(label)
        for code, label in state.global_allow.items():
            allow.setdefault(code, label)  # a marker is closer than the global list
        guarded = state.enabled or item.get_closest_marker("tokenguard") is not None
        if guarded or "tokenguard" in getattr(item, "fixturenames", ()):
            item.stash[PLAN] = _Plan(allow, declared)
            state.any_guarded = True


def _enter_phase(item: pytest.Item, phase: str) -> None:
    plan = item.stash.get(PLAN, None)
    if plan is None:
        return
    recorder = item.stash.get(RECORDER, None)
    if recorder is None:  # setup, or a later phase whose setup hook never ran
        capture.attach()
        recorder = TestRecorder(plan.allow)
        item.stash[RECORDER] = recorder
        capture.set_sink(recorder.sink)
        runtime_checks.set_target(recorder)
    recorder.phase = phase
    runtime_checks.ensure_installed()


# Plain tryfirst impls (not wrappers): they run before the runner sets up fixtures or calls the
# test, which is all that is needed, and cost less per test than generator wrappers.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _enter_phase(item, "setup")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    _enter_phase(item, "call")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _enter_phase(item, "teardown")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    recorder = item.stash.get(RECORDER, None)
    if recorder is None:
        return report
    failing = recorder.failing(call.when) if recorder.findings else []
    state = item.config.stash[STATE]
    if call.when == "call" and state.baseline is not None and "tokenguard" in getattr(item, "fixturenames", ()):
        observed = baseline.normalize(recorder.observed())
        item.stash[OBSERVED] = observed
        problem = _baseline_problem(state.baseline, item.nodeid, observed) if report.passed else None
        if problem is not None:
            report.outcome = "failed"
            report.longrepr = FindingsRepr(problem, problem.splitlines()[0])
    if failing:
        text = format_findings(failing)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = FindingsRepr(text, headline(failing))
        else:  # the test's own failure stays the headline; the findings come with it
            report.sections.append((f"tokenguard findings ({call.when})", text))
    if call.when == "teardown":
        capture.set_sink(None)
        runtime_checks.set_target(None)
        del item.stash[RECORDER]
        plan = item.stash[PLAN]
        result = TestResult(item.nodeid, (report.location[0], report.location[1]), list(recorder.findings),
                            plan.declared, sorted(recorder.matched_allows), item.stash.get(OBSERVED, None))
        setattr(report, REPORT_ATTRIBUTE, result.to_report_data())
        for finding in recorder.findings:
            flag = " (allowed)" if finding.allowed else " (expected)" if finding.expected else ""
            report.user_properties.append(
                (f"tokenguard:{finding.code}", f"{finding.phase} x{finding.count}{flag}: {finding.message}")
            )
    return report


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tokenguard_zoo" in metafunc.fixturenames:
        metafunc.parametrize("tokenguard_zoo", zoo.families(), indirect=True)


def _baseline_problem(state: _Baseline, nodeid: str, observed: dict[str, Any]) -> str | None:
    if not state.comparing:
        return None
    assert state.entries is not None
    return baseline.comparison_failure(state.entries, state.path, nodeid, observed, state.versions)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        state = items[0].config.stash.get(STATE, None)
        if state is not None and state.baseline is not None:
            state.baseline.deselected.update(item.nodeid for item in items)


@pytest.fixture
def tokenguard_zoo(request: pytest.FixtureRequest) -> zoo.ZooModel:
    """Each zoo family in turn (test ids carry the family): ``.name``, ``.model``, ``.tokenizer``, ``.layout``."""
    return zoo.zoo_model(request.param)


@pytest.fixture
def tokenguard_zoo_factory() -> Callable[[str], zoo.ZooModel]:
    """``factory("qwen3-0.6b")`` -> a fresh ``ZooModel`` of that family (built once per process)."""
    return zoo.zoo_model


@pytest.fixture
def tokenguard(request: pytest.FixtureRequest) -> TokenGuard:
    """Findings of this test; ``expect(*codes)``, ``assert_clean()``, ``clear()``, ``check(model, tokenizer)``."""
    recorder = request.node.stash.get(RECORDER, None)
    if recorder is None:
        raise pytest.UsageError("the tokenguard fixture is only available in function-scoped tests")
    return TokenGuard(recorder, strict=request.config.stash[STATE].strict)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class _SessionHooks:
    """Hooks that need the config but get only a report: registered per config in pytest_configure."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.state = config.stash[STATE]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, REPORT_ATTRIBUTE, None)
        if report.user_properties:  # the bundled suite's family x step table
            findings = TestResult.from_report_data(report.nodeid, ("", None), data).findings if data else []
            self.state.results.suite.add_report(report.user_properties, report.outcome, findings)
        if report.when != "teardown" or data is None:
            return
        self.state.any_guarded = True
        location = (report.location[0], report.location[1])
        self.state.results.add(TestResult.from_report_data(report.nodeid, location, data))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        if _is_worker(self.config):
            return
        if state.any_guarded or state.enabled:
            for label in state.results.stale_allows():
                warnings.warn(
                    TokenguardStaleAllowWarning(f"tokenguard allow entry {label} matched nothing in this run"),
                    stacklevel=1,
                )
        if state.report_path is not None:
            write_json_atomic(state.report_path, state.results.to_json())
        if state.baseline is not None:
            self.baseline_lines = self._finish_baseline(state.baseline, session)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.state.baseline is not None:
            self.state.baseline.collected.update(ids)

    def _finish_baseline(self, state: _Baseline, session: pytest.Session) -> list[str]:
        observed = {nodeid: {"observed": result.observed, "versions": state.versions}
                    for nodeid, result in self.state.results.tests.items() if result.observed is not None}
        stale = baseline.stale_entries(state.entries or {}, state.collected, state.deselected)
        if state.entries is None or state.update:
            kept = {k: v for k, v in (state.entries or {}).items() if k not in stale and k not in observed}
            baseline.save(state.path, {**kept, **observed})
            verb = "recorded" if state.entries is None else "updated"
            lines = [f"tokenguard baseline: {verb} {state.path} ({len(observed)} tests from this run, "
                     f"{len(kept)} kept, {len(stale)} stale removed)"]
            return lines
        lines = [f"tokenguard baseline: compared {len(observed)} tests with {state.path}"]
        if stale:
            lines.append(f"tokenguard baseline: {len(stale)} entr{'y' if len(stale) == 1 else 'ies'} for tests that "
                         "no longer exist (remove with --tokenguard-update-baseline):")
            lines.extend(f"  {nodeid}" for nodeid in stale)
            if state.strict:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return lines

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        state = self.state
        if not (state.any_guarded or state.enabled or getattr(self, "baseline_lines", None)) or _is_worker(self.config):
            return
        terminalreporter.write_sep("=", "tokenguard")
        for line in state.results.summary_lines():
            terminalreporter.write_line(line)
        for line in state.results.suite.lines():
            terminalreporter.write_line(line)
        for line in getattr(self, "baseline_lines", []):
            terminalreporter.write_line(line)
        if state.report_path is not None:
            terminalreporter.write_line(f"tokenguard: JSON report written to {state.report_path}")
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for line in state.results.github_lines():
                terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    if STATE in config.stash:
        capture.detach()
        runtime_checks.uninstall()
