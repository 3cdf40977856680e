"""The bundled suite's family x step table, merged from the reports of every phase (and xdist worker).

Suite tests mark their report with ``user_properties``: ``SUITE_PROPERTY`` = ``"family|step"``,
``SUITE_CODES_PROPERTY`` = the static codes a step noted (``!`` failing, ``~`` allowed) and ``SUITE_NOTE_PROPERTY``
= a line to print under the table (what the suite did for the step, or why it skipped); the guard's session adds
the runtime findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_tokenguard.output import columns

if TYPE_CHECKING:
    from pytest_tokenguard.guard.findings import RuntimeFinding

SUITE_PROPERTY = "tokenguard_suite"  # user property "family|step" set by the bundled suite's tests
SUITE_CODES_PROPERTY = SUITE_PROPERTY + "_codes"  # static codes a suite step noted, comma-separated
SUITE_NOTE_PROPERTY = SUITE_PROPERTY + "_note"  # one line about the step (the property may repeat)
_CODE_MARKS = {"!": "failing", "~": "expected"}
_OUTCOME_RANK = {"passed": 0, "skipped": 1, "failed": 2}


@dataclass
class SuiteCell:
    outcome: str = "passed"
    #: code -> "static" (a check noted it), "expected" (expected or allowed) or "failing"
    codes: dict[str, str] = field(default_factory=dict)
    #: what the suite did for this step (e.g. resized the base), or why it skipped; in the order first noted
    notes: list[str] = field(default_factory=list)

    def merge(self, outcome: str, codes: dict[str, str], notes: list[str] | None = None) -> None:
        if _OUTCOME_RANK.get(outcome, 0) > _OUTCOME_RANK.get(self.outcome, 0):
            self.outcome = outcome
        for code, kind in codes.items():
            if kind == "failing" or code not in self.codes:
                self.codes[code] = kind
        self.notes.extend(note for note in notes or [] if note not in self.notes)

    def text(self) -> str:
        label = {"passed": "ok", "failed": "FAIL", "skipped": "skip"}.get(self.outcome, self.outcome)
        marks = {"static": "", "expected": "~", "failing": "!"}
        codes = ",".join(f"{code}{marks[kind]}" for code, kind in sorted(self.codes.items()))
        return f"{label} {codes}".strip()


@dataclass
class SuiteTable:
    """family x step results of the bundled suite, merged from the reports of every phase."""

    cells: dict[str, dict[str, SuiteCell]] = field(default_factory=dict)

    def add_report(self, user_properties: list[tuple[str, object]], outcome: str, findings: list[RuntimeFinding]) -> bool:
        props = dict(user_properties)
        where = props.get(SUITE_PROPERTY)
        if not isinstance(where, str) or "|" not in where:
            return False
        family, step = where.split("|", 1)
        codes: dict[str, str] = {}
        for name, value in user_properties:  # a step may note codes more than once; a failing mark wins
            if name == SUITE_CODES_PROPERTY:
                for code in filter(None, str(value).split(",")):
                    kind = _CODE_MARKS.get(code[-1], "static")
                    if kind == "failing" or code.rstrip("!~") not in codes:
                        codes[code.rstrip("!~")] = kind
        for finding in findings:
            codes[finding.code] = "failing" if finding.failing else "expected"
        notes = [str(value) for name, value in user_properties if name == SUITE_NOTE_PROPERTY]
        self.cells.setdefault(family, {}).setdefault(step, SuiteCell()).merge(outcome, codes, notes)
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
        lines = ["tokenguard suite: family x step", *columns(rows)]
        lines.append("codes: TGxxx seen by a static check, TGxxx~ expected or allowed, TGxxx! failing")
        for family, row in self.cells.items():  # one line per note, naming every step it applies to
            by_note: dict[str, list[str]] = {}
            for step in steps:
                for note in row[step].notes if step in row else []:
                    by_note.setdefault(note, []).append(step)
            lines.extend(f"{family} {', '.join(noted)}: {note}" for note, noted in by_note.items())
        return lines

    def to_json(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            family: {
                step: {"outcome": cell.outcome, "codes": dict(sorted(cell.codes.items())), "notes": list(cell.notes)}
                for step, cell in row.items()
            }
            for family, row in sorted(self.cells.items())
        }
