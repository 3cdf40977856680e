"""Runtime findings of one test: classification, allow/expect bookkeeping, failure text."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_tokenguard.guard.catalog import classify, parse_updated_tokens, trainer_fix_lines
from pytest_tokenguard.guard.catalog import severity as code_severity

#: codes whose finding carries the ids a trainer rewrote (``details["updated_tokens"]``): the Trainer's own
#: alignment (TG101) and a trl trainer's silent copy (TG102)
UPDATED_TOKENS_CODES = frozenset({"TG101", "TG102"})
#: ``details`` key of a child process's finding: the processes (pid, host, rank, ...) it was seen in
PROCESSES = "processes"
#: ``details`` key of a child process's finding drained after its test had ended
AFTER_TEST = "after_test_ended"


@dataclass
class RuntimeFinding:
    """One finding of the runtime guard in one test phase: a transformers log record or warning matched by
    the catalog (TG1xx), a synthesized TG101, or a call check (TG2xx at ``Trainer.train()``/``generate()``).

    ``count`` is how often the identical record was seen in that phase; ``details`` holds what the catalog
    parsed (TG101: ``updated_tokens``, the dict transformers logged). ``severity`` is ``"fault"`` (fails the
    test) or ``"notice"`` (fails only when recorded under ``strict``), from ``catalog.SEVERITIES``.
    """

    code: str
    title: str
    message: str
    logger: str
    phase: str
    channel: str
    level: str
    fix: str
    count: int = 1
    details: dict[str, Any] = field(default_factory=dict)
    allowed_by: str | None = None
    expected: bool = False
    severity: str = "fault"
    #: recorded under --tokenguard-strict (notices fail too)
    strict: bool = False

    @property
    def allowed(self) -> bool:
        return self.allowed_by is not None

    @property
    def failing(self) -> bool:
        return not self.allowed and not self.expected and (self.severity == "fault" or self.strict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["allowed"] = self.allowed
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeFinding:
        fields = {k: v for k, v in data.items() if k != "allowed"}
        return cls(**fields)

    def processes(self) -> str | None:
        """Where a child process's finding was seen: ``"ranks 0, 1 (pids 41, 42)"``, ``"child pid 41"``;
        None for a finding of the test's own process."""
        processes = self.details.get(PROCESSES)
        if not processes:
            return None
        pids = ", ".join(str(p.get("pid")) for p in processes)
        ranks = sorted({p["rank"] for p in processes if p.get("rank") is not None})
        plural = "s" if len(processes) > 1 else ""
        if ranks:
            return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} (pid{plural} {pids})"
        return f"child pid{plural} {pids}"

    def fix_lines(self) -> list[str]:
        if self.code in UPDATED_TOKENS_CODES and self.details.get("updated_tokens"):
            return [self.fix + ":", *trainer_fix_lines(self.details["updated_tokens"])]
        return [self.fix]


class _ExpectScope:
    def __init__(self, codes: frozenset[str]) -> None:
        self.codes = codes
        self.seen: set[str] = set()


class TestRecorder:
    """Collects the findings of the running test from any thread, grouped by identical record.

    One recorder serves a whole session: :meth:`begin` starts a test, :meth:`end` stops recording (what
    arrives between tests belongs to no test and is dropped). Constructed with ``allow``, it is already
    recording (scripts and unit tests use it that way).
    """

    __test__ = False  # a pytest-collected name ("Test...") that is not a test class

    def __init__(self, allow: Mapping[str, str] | None = None, *, strict: bool = False) -> None:
        #: code -> label of the allow entry that covers it in this test
        self.allow: Mapping[str, str] = dict(allow or {})
        #: notices fail too (--tokenguard-strict)
        self.strict = strict
        self.phase = "setup"
        self.active = True
        self.findings: list[RuntimeFinding] = []
        self.matched_allows: set[str] = set()
        self._index: dict[tuple[str, str, str, str, bool, bool], RuntimeFinding] = {}
        self._scopes: list[_ExpectScope] = []
        self._lock = threading.Lock()
        #: what the test recorded with tokenguard.observe()/snapshot()/check(), for baselines
        self.observations: dict[str, Any] = {}
        #: brings in what arrived elsewhere (child processes' spool) before the findings are read mid-test
        self.pull: Callable[[], None] | None = None

    def begin(self, allow: Mapping[str, str], phase: str = "setup") -> None:
        """Start recording a new test (forgets the previous test's findings and observations).

        ``allow`` is kept, not copied: the caller hands over a mapping it does not change.
        """
        # Runs once per guarded test: no lock and no allocation unless the previous test left something.
        self.allow = allow
        self.phase = phase
        if self.findings or self.observations or self.matched_allows or self._scopes:
            with self._lock:
                self.findings = []
                self._index = {}
                self.matched_allows = set()
                self.observations = {}
                self._scopes = []
        self.active = True

    def end(self) -> None:
        """Stop recording: the test is over."""
        self.active = False

    def observe(self, key: str, value: Any) -> None:
        with self._lock:
            self.observations[key] = value

    def observed(self) -> dict[str, Any]:
        """The test's token behaviour so far: codes with counts, Trainer updates, and its observations."""
        with self._lock:
            codes: dict[str, int] = {}
            for finding in self.findings:
                codes[finding.code] = codes.get(finding.code, 0) + finding.count
            updates = [f.details["updated_tokens"] for f in self.findings if f.code == "TG101" and "updated_tokens" in f.details]
            return {"codes": dict(sorted(codes.items())), "trainer_updates": updates, **self.observations}

    def sink(self, logger: str, level: int, message: str, channel: str) -> None:
        if not self.active:
            return
        match = classify(message, level)
        if match is None:
            return
        details: dict[str, Any] = dict(match.groups)
        if match.code == "TG101" and "updated" in details:
            details = {"updated_tokens": parse_updated_tokens(details.pop("updated"))}
        self.add(match.code, match.title, message, logger, channel, logging.getLevelName(level), match.fix, details)

    def add(
        self,
        code: str,
        title: str,
        message: str,
        logger: str,
        channel: str,
        level: str,
        fix: str,
        details: dict[str, Any] | None = None,
        severity: str | None = None,
        origin: dict[str, Any] | None = None,
    ) -> None:
        """Record one finding (identical ones in the same phase are counted, not repeated). ``severity``
        defaults to the catalog's for ``code``. ``origin`` (``spool.origin()``: pid, host, rank, local rank):
        a child process's finding; identical ones from several processes
        (ranks) are one finding listing them in ``details["processes"]``."""
        if not self.active:
            return
        with self._lock:
            expected = False
            for scope in self._scopes:
                if code in scope.codes:
                    scope.seen.add(code)
                    expected = True
            key = (code, message, logger, self.phase, expected, origin is not None)
            existing = self._index.get(key)
            if existing is not None:
                existing.count += 1
                if origin is not None:
                    processes = existing.details.setdefault(PROCESSES, [])
                    if origin not in processes:
                        processes.append(origin)
                return
            allowed_by = self.allow.get(code)
            if allowed_by is not None:
                self.matched_allows.add(allowed_by)
            finding = RuntimeFinding(
                code=code,
                title=title,
                message=message,
                logger=logger,
                phase=self.phase,
                channel=channel,
                level=level,
                fix=fix,
                details=dict(details or {}, **({PROCESSES: [origin]} if origin is not None else {})),
                allowed_by=allowed_by,
                expected=expected,
                severity=severity or code_severity(code),
                strict=self.strict,
            )
            self._index[key] = finding
            self.findings.append(finding)

    def credit_allow(self, code: str) -> bool:
        """An allow entry covered ``code`` outside the recorder (e.g. ``tokenguard.check``): not stale."""
        with self._lock:
            label = self.allow.get(code)
            if label is not None:
                self.matched_allows.add(label)
            return label is not None

    def sync(self) -> None:
        """Bring in findings that arrived elsewhere (child processes) so far."""
        if self.pull is not None:
            self.pull()

    @contextmanager
    def expecting(self, codes: Iterable[str]) -> Iterator[_ExpectScope]:
        scope = _ExpectScope(frozenset(codes))
        with self._lock:
            self._scopes.append(scope)
        try:
            yield scope
        finally:
            self.sync()  # children of the block report to the block
            with self._lock:
                self._scopes.remove(scope)

    def failing(self, phase: str | None = None) -> list[RuntimeFinding]:
        with self._lock:
            return [f for f in self.findings if f.failing and (phase is None or f.phase == phase)]

    def clear(self) -> None:
        with self._lock:
            self.findings.clear()
            self._index.clear()


def headline(findings: list[RuntimeFinding]) -> str:
    """One line for the short test summary, JUnit and xdist, naming the codes.

    One finding: ``tokenguard: TG113 right padding with a decoder-only model``; several of one code:
    ``tokenguard: TG110 pad_token_id ... (2 findings)``; several codes: ``tokenguard: TG101, TG203 (3 findings)``.
    """
    count = sum(f.count for f in findings)
    codes = sorted({f.code for f in findings})
    suffix = f" ({count} findings)" if count != 1 else ""
    if len(codes) > 1:
        return f"tokenguard: {', '.join(codes)}{suffix}"
    first = findings[0]
    text = f"tokenguard: {first.code} {first.title}"
    updated = first.details.get("updated_tokens") if first.code in UPDATED_TOKENS_CODES else None
    if updated:
        text += " (" + ", ".join(f"{name} {value}" for name, value in updated.items()) + ")"
    where = first.processes()
    if where is not None:
        text += f" in {where.split(' (')[0]}"
    return text + suffix


def format_findings(findings: list[RuntimeFinding]) -> str:
    """The failure text: one block per finding with code, message, where, how often and the fix."""
    count = sum(f.count for f in findings)
    lines = [f"tokenguard: {count} special-token finding{'s' if count != 1 else ''}"]
    for f in findings:
        lines.append("")
        lines.append(f"{f.code} {f.title}" + (" [notice, failing under --tokenguard-strict]" if f.severity == "notice" else ""))
        lines.append(f"  message: {f.message}")
        lines.append(f"  logger:  {f.logger} ({f.channel}, {f.level})")
        if f.details.get("synthesized"):
            lines.append(
                f"  note:    synthesized: transformers {f.details.get('transformers')} does not align special "
                "tokens in Trainer.train(); this is what transformers >= 5.18 would do"
            )
        lines.append(f"  phase:   {f.phase}, seen {f.count} time{'s' if f.count != 1 else ''}")
        where = f.processes()
        if where is not None:
            lines.append(f"  process: {where}")
        if f.details.get(AFTER_TEST):
            lines.append("  note:    reported by a child process after the test ended")
        if f.code in UPDATED_TOKENS_CODES and "updated_tokens" in f.details:
            lines.append(f"  updated tokens: {f.details['updated_tokens']}")
        fix = f.fix_lines()
        lines.append(f"  fix:     {fix[0]}")
        lines.extend(f"           {line}" for line in fix[1:])
    lines.append("")
    lines.append(
        f'allow with @pytest.mark.tokenguard_allow("{findings[0].code}", reason="...") or assert with '
        f'tokenguard.expect("{findings[0].code}")'
    )
    return "\n".join(lines)
