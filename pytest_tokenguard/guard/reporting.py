"""Session results: aggregated from test reports (so xdist workers merge), JSON, summary, CI lines."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pytest_tokenguard.guard.findings import RuntimeFinding
from pytest_tokenguard.output import SCHEMA_VERSION_KEY, clean_summary
from pytest_tokenguard.suite.table import SuiteTable
from pytest_tokenguard.versions import installed_text

SCHEMA_VERSION = 1
REPORT_ATTRIBUTE = "tokenguard"
PACKAGES = ("transformers", "peft", "torch", "pytest", "pytest-tokenguard")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from metadata so nothing heavy is imported."""
    return {name: installed_text(name) for name in PACKAGES}


@dataclass
class TestResult:
    """One guarded test's outcome for tokenguard: its runtime findings, and the codes of the tokenguard
    failures it raised (``TokenAlignmentError`` from ``tokenguard.check``/``assert_special_tokens_aligned``,
    a transformers error the catalog knows, a failing bundled-suite step)."""

    __test__ = False  # not a test class

    nodeid: str
    location: tuple[str, int | None]
    findings: list[RuntimeFinding] = field(default_factory=list)
    declared_allows: list[str] = field(default_factory=list)
    matched_allows: list[str] = field(default_factory=list)
    #: what the test observed, for --tokenguard-baseline (None: not a baseline test)
    observed: dict[str, Any] | None = None
    #: codes of tokenguard failures raised as exceptions (sorted)
    raised: list[str] = field(default_factory=list)
    #: declared allow label -> (file, line) where it is written
    allow_locations: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def failing(self) -> list[RuntimeFinding]:
        return [f for f in self.findings if f.failing]

    @property
    def failing_codes(self) -> list[str]:
        """Every code that failed this test: failing findings and raised failures."""
        return sorted({f.code for f in self.failing} | set(self.raised))

    def to_report_data(self) -> dict[str, Any]:
        """Plain data carried on the teardown report (xdist serialises it)."""
        return {
            "findings": [f.to_dict() for f in self.findings],
            "declared_allows": self.declared_allows,
            "matched_allows": self.matched_allows,
            "observed": self.observed,
            "raised": self.raised,
            "allow_locations": {label: list(where) for label, where in self.allow_locations.items()},
        }

    @classmethod
    def from_report_data(cls, nodeid: str, location: tuple[str, int | None], data: dict[str, Any]) -> TestResult:
        return cls(
            nodeid=nodeid,
            location=location,
            findings=[RuntimeFinding.from_dict(f) for f in data.get("findings", [])],
            declared_allows=list(data.get("declared_allows", [])),
            matched_allows=list(data.get("matched_allows", [])),
            observed=data.get("observed"),
            raised=list(data.get("raised", [])),
            allow_locations={label: (str(where[0]), int(where[1])) for label, where in data.get("allow_locations", {}).items()},
        )


@dataclass
class SessionResults:
    """What the session learnt: guarded tests counted, and the results of those that carry data (findings,
    allow entries, baseline observations; every guarded test when the JSON report is written)."""

    global_allows: list[str] = field(default_factory=list)
    tests: dict[str, TestResult] = field(default_factory=dict)
    suite: SuiteTable = field(default_factory=SuiteTable)
    #: guarded tests in the whole run (clean ones included, also when they carry no data)
    guarded: int = 0

    def add(self, result: TestResult) -> None:
        self.tests[result.nodeid] = result

    def code_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for result in self.tests.values():
            for finding in result.findings:
                counts[finding.code] += finding.count
        return counts

    def failing_tests(self) -> list[TestResult]:
        """Tests that tokenguard failed, by node id (xdist completes them in any order)."""
        return [r for _, r in sorted(self.tests.items()) if r.failing_codes]

    def stale_allows(self) -> list[str]:
        declared = set(self.global_allows)
        matched: set[str] = set()
        for result in self.tests.values():
            declared.update(result.declared_allows)
            matched.update(result.matched_allows)
        return sorted(declared - matched)

    def summary_lines(self) -> list[str]:
        """The terminal summary: "clean" only when no guarded test had a finding or a tokenguard failure."""
        counts = self.code_counts()
        failing = self.failing_tests()
        guarded = self.guarded
        if not counts and not failing:
            return [clean_summary(guarded)]
        allowed = sum(f.count for r in self.tests.values() for f in r.findings if f.allowed)
        expected = sum(f.count for r in self.tests.values() for f in r.findings if f.expected)
        notices = sum(f.count for r in self.tests.values() for f in r.findings if f.severity == "notice")
        raised = sum(len(r.raised) for r in self.tests.values())
        total = sum(counts.values())
        parts = [f"{total} finding{_s(total)} in {guarded} guarded test{_s(guarded)}"]
        if counts:
            parts[0] += " (" + ", ".join(f"{code} x{n}" for code, n in sorted(counts.items())) + ")"
        details = [f"{allowed} allowed", f"{expected} expected"]
        if notices:
            details.append(f"{notices} notice{_s(notices)}")
        if raised:
            details.append(f"{raised} raised failure{_s(raised)}")
        details.append(f"{len(failing)} failing test{_s(len(failing))}")
        lines = [f"tokenguard: {parts[0]}; {', '.join(details)}"]
        for result in failing:
            lines.append(f"FAILED {result.nodeid} ({', '.join(result.failing_codes)})")
        return lines

    def github_lines(self) -> list[str]:
        lines = []
        for result in self.failing_tests():
            path, lineno = result.location
            line = (lineno or 0) + 1
            texts = [f"{finding.code} {finding.title}: {finding.message}" for finding in result.failing]
            texts += [f"{code} raised in the test" for code in result.raised]
            for text in texts:
                text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
                lines.append(f"::error file={path},line={line}::{text}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            SCHEMA_VERSION_KEY: SCHEMA_VERSION,
            "versions": package_versions(),
            "summary": {
                "guarded_tests": self.guarded,
                "failing_tests": [r.nodeid for r in self.failing_tests()],
                "codes": dict(sorted(self.code_counts().items())),
                "stale_allows": self.stale_allows(),
            },
            "tests": {
                nodeid: {"findings": [f.to_dict() for f in result.findings], "raised": result.raised}
                for nodeid, result in sorted(self.tests.items())
            },
            "suite": self.suite.to_json(),
        }
