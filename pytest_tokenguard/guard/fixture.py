"""The object behind the ``tokenguard`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pytest_tokenguard.guard.allowlist import AllowError, split_codes
from pytest_tokenguard.guard.findings import RuntimeFinding, TestRecorder, format_findings
from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.checks import Report, TokenAlignmentError


class TokenGuardFailure(AssertionError):
    """Raised by ``tokenguard.assert_clean()``; the message lists the findings."""


class TokenGuard:
    """The ``tokenguard`` fixture: inspect and assert the token-alignment findings of the running test.

    Annotate with it (``def test_x(tokenguard: TokenGuard)``). Findings come from transformers' log records
    and warnings (classified by the catalog), synthesized TG101s and ``--tokenguard-calls`` checks.
    """

    def __init__(self, recorder: TestRecorder, *, strict: bool = False) -> None:
        self._recorder = recorder
        self._strict = strict

    @property
    def records(self) -> list[RuntimeFinding]:
        """:class:`RuntimeFinding` objects of this test so far, in the order first seen (allowed and expected
        ones included, flagged by ``allowed_by`` / ``expected``); child processes' findings included."""
        self._recorder.sync()
        return list(self._recorder.findings)

    @property
    def codes(self) -> list[str]:
        """The codes of :attr:`records`, in the same order (a code seen in several phases appears once per phase)."""
        return [f.code for f in self.records]

    @contextmanager
    def expect(self, *codes: str) -> Iterator[None]:
        """Expect each code inside the block; those findings do not fail the test.

        Fails the test (``pytest.fail``) when a listed code was not emitted inside the block; raises
        ``pytest.UsageError`` for unknown codes or none at all.
        """
        try:
            wanted = split_codes(codes, "tokenguard.expect()")
        except AllowError as exc:
            raise pytest.UsageError(str(exc)) from None
        if not wanted:
            raise pytest.UsageError('tokenguard.expect() needs at least one code, e.g. tokenguard.expect("TG101")')
        with self._recorder.expecting(wanted) as scope:
            yield
        missing = [code for code in wanted if code not in scope.seen]
        if missing:
            emitted = sorted({f.code for f in self._recorder.findings}) or ["nothing"]
            pytest.fail(
                f"tokenguard.expect: {', '.join(missing)} not emitted inside the block "
                f"(emitted in this test so far: {', '.join(emitted)})",
                pytrace=False,
            )

    def assert_clean(self) -> None:
        """Fail now if this test has findings that are neither allowed nor expected."""
        self._recorder.sync()
        failing = self._recorder.failing()
        if failing:
            raise TokenGuardFailure(format_findings(failing))

    def check(self, model: Any, tokenizer: Any = None, generation_config: Any = None, *, strict: bool | None = None) -> Report:
        """``assert_special_tokens_aligned`` honouring this test's allow marker and ``--tokenguard-strict``.

        Returns the report; raises :class:`TokenAlignmentError` on failing findings.
        """
        return self._verdict(check_special_tokens(model, tokenizer, generation_config), strict)

    def _verdict(self, report: Report, strict: bool | None) -> Report:
        checks = self._recorder.observations.setdefault("checks", [])
        checks.append(sorted(f"{f.code} {f.field} {f.severity}" for f in report.findings))
        failing = report.failing(strict=self._strict if strict is None else strict)
        for finding in failing:  # an allow entry that covers a finding is in use, not stale
            self._recorder.credit_allow(finding.code)
        failing = [f for f in failing if f.code not in self._recorder.allow]
        if failing:
            raise TokenAlignmentError(report, failing)
        return report

    def check_batch(
        self, batch: Any, tokenizer: Any = None, model: Any = None, *, purpose: str | None = None, strict: bool | None = None
    ) -> Report:
        """``check_batch`` (TG3xx on ``input_ids`` / ``attention_mask`` / ``labels``, batch x sequence) honouring this
        test's allow marker and ``--tokenguard-strict``. Returns the report; raises :class:`TokenAlignmentError`
        on failing findings."""
        from pytest_tokenguard.static.sequences import check_batch

        return self._verdict(check_batch(batch, tokenizer, model, purpose=purpose), strict)

    def observe(self, key: str, value: Any) -> None:
        """Record a JSON-able observation of this test (compared by ``--tokenguard-baseline``)."""
        self._recorder.observe(key, value)

    def snapshot(self, model: Any, tokenizer: Any = None, generation_config: Any = None, *, name: str = "default") -> Report:
        """Add this layout (ids, token strings, static findings) to the test's baseline entry."""
        report = check_special_tokens(model, tokenizer, generation_config)
        layout = report.layout
        snapshots = self._recorder.observations.setdefault("snapshots", {})
        snapshots[name] = {
            "model_config": layout.model,
            "generation_config": layout.generation,
            "tokenizer": layout.tokenizer,
            "end_of_turn": list(layout.end_of_turn) if layout.end_of_turn else None,
            "strings": {str(k): v for k, v in sorted(layout.token_strings.items())},
            "findings": sorted(f"{f.code} {f.field} {f.severity}" for f in report.findings),
        }
        return report

    def clear(self) -> None:
        """Forget the findings recorded so far in this test."""
        self._recorder.clear()
