"""Allow entries: which codes a test, class, module or the whole run accepts, and why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_tokenguard.guard.catalog import RUNTIME_CODES
from pytest_tokenguard.static.checks import STATIC_CODE_SET

MARKER = "tokenguard_allow"


class AllowError(ValueError):
    """A bad allow entry; the plugin turns it into ``pytest.UsageError``."""


def valid_codes() -> frozenset[str]:
    return RUNTIME_CODES | STATIC_CODE_SET


def _unknown(code: str, where: str) -> AllowError:
    listing = ", ".join(sorted(valid_codes()))
    return AllowError(f"tokenguard: unknown code {code!r} in {where}. Valid codes: {listing}")


def split_codes(values: Iterable[str], where: str) -> list[str]:
    """``["TG101,TG110", "TG113"]`` -> ``["TG101", "TG110", "TG113"]``, each one checked."""
    codes: list[str] = []
    for value in values:
        for part in str(value).split(","):
            code = part.strip().upper()
            if not code:
                continue
            if code not in valid_codes():
                raise _unknown(part.strip(), where)
            codes.append(code)
    return codes


@dataclass(frozen=True)
class MarkerAllow:
    codes: tuple[str, ...]
    reason: str


def parse_marker(args: tuple[Any, ...], kwargs: Mapping[str, Any], where: str) -> MarkerAllow:
    """Check ``@pytest.mark.tokenguard_allow("TG101", ..., reason="...")``."""
    usage = f'write @pytest.mark.{MARKER}("TG101", reason="why this test may emit it")'
    extra = set(kwargs) - {"reason"}
    if extra:
        raise AllowError(f"tokenguard: {MARKER} on {where} got unexpected keyword(s) {sorted(extra)}; {usage}")
    if not args:
        raise AllowError(f"tokenguard: {MARKER} on {where} names no code; {usage}")
    for arg in args:
        if not isinstance(arg, str):
            raise AllowError(f"tokenguard: {MARKER} on {where} takes code strings, got {arg!r}; {usage}")
    reason = kwargs.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise AllowError(f"tokenguard: {MARKER} on {where} needs a reason; {usage}")
    return MarkerAllow(tuple(split_codes(args, f"{MARKER} on {where}")), reason.strip())


def allow_label(source: str, code: str) -> str:
    """Identity of one allow entry, used to report entries that matched nothing."""
    return f"{source}::{code}"
