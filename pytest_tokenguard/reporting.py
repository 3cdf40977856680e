"""Session results: aggregated from test reports (so xdist workers merge), JSON, summary, CI lines."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .findings import Finding

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
    findings: list[Finding] = field(default_factory=list)
    declared_allows: list[str] = field(default_factory=list)
    matched_allows: list[str] = field(default_factory=list)
    #: what the test observed, for --tokenguard-baseline (None: not a baseline test)
    observed: dict[str, Any] | None = None

    @property
    def failing(self) -> list[Finding]:
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
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            declared_allows=list(data.get("declared_allows", [])),
            matched_allows=list(data.get("matched_allows", [])),
            observed=data.get("observed"),
        )


SUITE_PROPERTY = "tokenguard_suite"  # user property "family|step" set by the bundled suite's tests
SUITE_CODES_PROPERTY = SUITE_PROPERTY + "_codes"  # static codes a suite step noted, comma-separated
_OUTCOME_RANK = {"passed": 0, "skipped": 1, "failed": 2}


@dataclass
class SuiteCell:
    outcome: str = "passed"
    #: code -> "static" (a check noted it), "expected" (expected or allowed) or "failing"
    codes: dict[str, str] = field(default_factory=dict)

    def merge(self, outcome: str, codes: dict[str, str]) -> None:
        if _OUTCOME_RANK.get(outcome, 0) > _OUTCOME_RANK.get(self.outcome, 0):
            self.outcome = outcome
        for code, kind in codes.items():
            if kind == "failing" or code not in self.codes:
                self.codes[code] = kind

    def text(self) -> str:
        label = {"passed": "ok", "failed": "FAIL", "skipped": "skip"}.get(self.outcome, self.outcome)
        marks = {"static": "", "expected": "~", "failing": "!"}
        codes = ",".join(f"{code}{marks[kind]}" for code, kind in sorted(self.codes.items()))
        return f"{label} {codes}".strip()


@dataclass
class SuiteTable:
    """family x step results of the bundled suite, merged from the reports of every phase."""

    cells: dict[str, dict[str, SuiteCell]] = field(default_factory=dict)

    def add_report(self, user_properties: list[tuple[str, object]], outcome: str, findings: list[Finding]) -> bool:
        props = dict(user_properties)
        where = props.get(SUITE_PROPERTY)
        if not isinstance(where, str) or "|" not in where:
            return False
        family, step = where.split("|", 1)
        codes = {code.rstrip("!"): "failing" if code.endswith("!") else "static"
                 for code in str(props.get(SUITE_CODES_PROPERTY, "")).split(",") if code}
        for finding in findings:
            codes[finding.code] = "failing" if finding.failing else "expected"
        self.cells.setdefault(family, {}).setdefault(step, SuiteCell()).merge(outcome, codes)
        return True

    def steps(self) -> list[str]:
        order: list[str] = []
        for row in self.cells.values():
            order.extend(step for step in row if step not in order)
        return order

    def lines(self) -> list[str]:
        if not self.cells:
            return []
        steps = self.steps()
        rows = [["family", *steps]]
        for family, row in self.cells.items():
            rows.append([family, *(row[step].text() if step in row else "-" for step in steps)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["tokenguard suite: family x step"]
        lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
        lines.append("codes: TGxxx seen by a static check, TGxxx~ expected or allowed, TGxxx! failing")
        return lines

    def to_json(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {family: {step: {"outcome": cell.outcome, "codes": dict(sorted(cell.codes.items()))}
                         for step, cell in row.items()} for family, row in sorted(self.cells.items())}


@dataclass
class SessionResults:
    global_allows: list[str] = field(default_factory=list)
    tests: dict[str, TestResult] = field(default_factory=dict)
    suite: SuiteTable = field(default_factory=SuiteTable)

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
        guarded = len(self.tests)
        if not counts:
            return [f"tokenguard: clean, {guarded} guarded test{'s' if guarded != 1 else ''}, no token-alignment warnings"]
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
            "schema_version": SCHEMA_VERSION,
            "versions": package_versions(),
            "summary": {
                "guarded_tests": len(self.tests),
                "failing_tests": [r.nodeid for r in self.failing_tests()],
                "codes": dict(sorted(self.code_counts().items())),
                "stale_allows": self.stale_allows(),
            },
            "tests": {
                nodeid: {"findings": [f.to_dict() for f in result.findings]}
                for nodeid, result in sorted(self.tests.items())
            },
            "suite": self.suite.to_json(),
        }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
