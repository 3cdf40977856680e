"""Session results: aggregated from test reports (so xdist workers merge), JSON, summary, CI lines."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from pytest_tokenguard.guard.findings import RuntimeFinding
from pytest_tokenguard.output import SCHEMA_VERSION_KEY, clean_summary
from pytest_tokenguard.suite.table import SuiteTable

SCHEMA_VERSION = 1
REPORT_ATTRIBUTE = "tokenguard"
PACKAGES = ("transformers", "peft", "torch", "pytest", "pytest-tokenguard")


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from metadata so nothing heavy is imported."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass
class TestResult:
    nodeid: str
    location: tuple[str, int | None]
    findings: list[RuntimeFinding] = field(default_factory=list)
    declared_allows: list[str] = field(default_factory=list)
    matched_allows: list[str] = field(default_factory=list)
    #: what the test observed, for --tokenguard-baseline (None: not a baseline test)
    observed: dict[str, Any] | None = None

    @property
    def failing(self) -> list[RuntimeFinding]:
        return [f for f in self.findings if f.failing]

    def to_report_data(self) -> dict[str, Any]:
        """Plain data carried on the teardown report (xdist serialises it)."""
        return {
            "findings": [f.to_dict() for f in self.findings],
            "declared_allows": self.declared_allows,
            "matched_allows": self.matched_allows,
            "observed": self.observed,
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
        return [r for r in self.tests.values() if r.failing]

    def stale_allows(self) -> list[str]:
        declared = set(self.global_allows)
        matched: set[str] = set()
        for result in self.tests.values():
            declared.update(result.declared_allows)
            matched.update(result.matched_allows)
        return sorted(declared - matched)

    def summary_lines(self) -> list[str]:
        counts = self.code_counts()
        failing = self.failing_tests()
        guarded = self.guarded
        if not counts:
            return [clean_summary(guarded)]
        allowed = sum(f.count for r in self.tests.values() for f in r.findings if f.allowed)
        expected = sum(f.count for r in self.tests.values() for f in r.findings if f.expected)
        per_code = ", ".join(f"{code} x{n}" for code, n in sorted(counts.items()))
        lines = [
            f"tokenguard: {sum(counts.values())} findings in {guarded} guarded tests ({per_code}); "
            f"{allowed} allowed, {expected} expected, {len(failing)} failing test{'s' if len(failing) != 1 else ''}"
        ]
        for result in failing:
            codes = ", ".join(sorted({f.code for f in result.failing}))
            lines.append(f"FAILED {result.nodeid} ({codes})")
        return lines

    def github_lines(self) -> list[str]:
        lines = []
        for result in self.failing_tests():
            path, lineno = result.location
            line = (lineno or 0) + 1
            for finding in result.failing:
                text = f"{finding.code} {finding.title}: {finding.message}".replace("%", "%25")
                text = text.replace("\r", "%0D").replace("\n", "%0A")
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
                nodeid: {"findings": [f.to_dict() for f in result.findings]} for nodeid, result in sorted(self.tests.items())
            },
            "suite": self.suite.to_json(),
        }
