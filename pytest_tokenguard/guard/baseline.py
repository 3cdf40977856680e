"""Baseline snapshots of observed token behaviour, for upgrade regressions (``--tokenguard-baseline``).

Per test: the codes emitted (with counts), the Trainer's updated tokens, and whatever the test observed
through the ``tokenguard`` fixture (``observe``, ``snapshot``, ``check``), plus the versions of
transformers/peft/torch. The file is stable JSON (sorted keys, no timestamps), written atomically; a
corrupt file is an error naming it and is never overwritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tokenguard.output import SCHEMA_VERSION_KEY, write_json_atomic

SCHEMA = 1
VERSION_PACKAGES = ("transformers", "peft", "torch")


class BaselineError(Exception):
    """The baseline file cannot be used; the message names it."""


@dataclass(frozen=True)
class Difference:
    field: str
    old: Any
    new: Any


def load(path: Path) -> dict[str, dict[str, Any]] | None:
    """The entries of the baseline at ``path`` (``None`` when there is no file yet)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: cannot read the baseline ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}: corrupt baseline, malformed JSON at line {exc.lineno} column {exc.colno}; "
            "fix or delete it (it is never overwritten)"
        ) from None
    # "schema" is how 0.2 spelled the version key; those files still load
    schema = data.get(SCHEMA_VERSION_KEY, data.get("schema")) if isinstance(data, dict) else None
    if not isinstance(data, dict) or schema != SCHEMA or not isinstance(data.get("tests"), dict):
        raise BaselineError(
            f'{path}: not a tokenguard baseline (expected an object with "{SCHEMA_VERSION_KEY}": '
            f"{SCHEMA} and "
            '"tests"); fix or delete it (it is never overwritten)'
        )
    tests: dict[str, dict[str, Any]] = data["tests"]
    for nodeid, entry in tests.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("observed"), dict):
            raise BaselineError(f'{path}: entry {nodeid!r} has no "observed" object; fix or delete the file')
    return tests


def save(path: Path, tests: dict[str, dict[str, Any]]) -> None:
    write_json_atomic(path, {SCHEMA_VERSION_KEY: SCHEMA, "tests": dict(sorted(tests.items()))})


def normalize(value: Any) -> Any:
    """What JSON round-trips to: tuples become lists, keys strings (so old and new compare alike)."""
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):  # an empty object adds no field: {} and {"a": 1} differ in "a" only
        for key in sorted(value):
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[Difference]:
    """Field-by-field differences (dotted paths into nested objects; lists compare whole)."""
    flat_old: dict[str, Any] = {}
    flat_new: dict[str, Any] = {}
    _flatten(normalize(old), "", flat_old)
    _flatten(normalize(new), "", flat_new)
    missing = object()
    result = []
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key, missing), flat_new.get(key, missing)
        if before != after:
            result.append(Difference(key, "(absent)" if before is missing else before, "(absent)" if after is missing else after))
    return result


def _versions(versions: dict[str, Any]) -> str:
    return ", ".join(f"{name} {versions.get(name)}" for name in VERSION_PACKAGES)


def format_differences(
    nodeid: str, path: Path, diffs: list[Difference], old_versions: dict[str, Any], new_versions: dict[str, Any]
) -> str:
    lines = [
        f"tokenguard baseline: token behaviour changed since {path}",
        f"  test: {nodeid}",
        f"  old versions: {_versions(old_versions)}",
        f"  new versions: {_versions(new_versions)}",
    ]
    for diff in diffs:
        lines.append(f"  field {diff.field}:")
        lines.append(f"    old: {json.dumps(diff.old, sort_keys=True)}")
        lines.append(f"    new: {json.dumps(diff.new, sort_keys=True)}")
    lines.append("accept the new behaviour with --tokenguard-update-baseline once it is intended")
    return "\n".join(lines)


def comparison_failure(
    entries: dict[str, dict[str, Any]], path: Path, nodeid: str, observed: dict[str, Any], versions: dict[str, Any]
) -> str | None:
    """Why ``observed`` does not match the baseline entry of ``nodeid`` (None when it does)."""
    entry = entries.get(nodeid)
    if entry is None:
        return f"tokenguard baseline: {nodeid} has no entry in {path}\nrecord it with --tokenguard-update-baseline"
    diffs = differences(entry["observed"], observed)
    if not diffs:
        return None
    return format_differences(nodeid, path, diffs, entry.get("versions", {}), versions)


def stale_entries(baseline: dict[str, dict[str, Any]], collected: set[str], deselected: set[str]) -> list[str]:
    """Entries for tests that no longer exist: their module was collected, the test was not (nor deselected)."""
    modules = {nodeid.split("::", 1)[0] for nodeid in collected | deselected}
    return sorted(
        nodeid
        for nodeid in baseline
        if nodeid.split("::", 1)[0] in modules and nodeid not in collected and nodeid not in deselected
    )


@dataclass
class BaselineSession:
    """One run's baseline: the entries read at configure, what was collected, and the verdict per test.

    Created by :meth:`from_options` (``--tokenguard-baseline``); compares each test's observations as it
    finishes (:meth:`failure`), and at the end of the run writes the file or lists stale entries
    (:meth:`finish`).
    """

    path: Path
    #: entries of the existing file (None: no file yet, this run records it)
    entries: dict[str, dict[str, Any]] | None
    update: bool
    strict: bool
    versions: dict[str, Any]
    collected: set[str] = field(default_factory=set)
    deselected: set[str] = field(default_factory=set)

    @classmethod
    def from_options(cls, path: str | None, update: bool, strict: bool, versions: dict[str, Any]) -> BaselineSession | None:
        """None without a path; raises :class:`BaselineError` for flags without a path or an unusable file."""
        if not path:
            if update or strict:
                raise BaselineError("--tokenguard-update-baseline/--tokenguard-baseline-strict need --tokenguard-baseline PATH")
            return None
        return cls(Path(path), load(Path(path)), update, strict, {name: versions.get(name) for name in VERSION_PACKAGES})

    @property
    def comparing(self) -> bool:
        return self.entries is not None and not self.update

    def failure(self, nodeid: str, observed: dict[str, Any]) -> str | None:
        """Why this test's observations differ from its entry (None: same, or not comparing)."""
        if self.entries is None or self.update:
            return None
        return comparison_failure(self.entries, self.path, nodeid, observed, self.versions)

    def finish(self, observed: dict[str, dict[str, Any]]) -> tuple[list[str], bool]:
        """Write (record/update) or compare-and-report; returns the summary lines and whether stale entries fail."""
        entries = {nodeid: {"observed": value, "versions": self.versions} for nodeid, value in observed.items()}
        stale = stale_entries(self.entries or {}, self.collected, self.deselected)
        if self.entries is None or self.update:
            kept = {k: v for k, v in (self.entries or {}).items() if k not in stale and k not in entries}
            save(self.path, {**kept, **entries})
            verb = "recorded" if self.entries is None else "updated"
            return [
                f"tokenguard baseline: {verb} {self.path} ({len(entries)} tests from this run, "
                f"{len(kept)} kept, {len(stale)} stale removed)"
            ], False
        lines = [f"tokenguard baseline: compared {len(entries)} tests with {self.path}"]
        if stale:
            lines.append(
                f"tokenguard baseline: {len(stale)} entr{'y' if len(stale) == 1 else 'ies'} for tests that "
                "no longer exist (remove with --tokenguard-update-baseline):"
            )
            lines.extend(f"  {nodeid}" for nodeid in stale)
        return lines, bool(stale) and self.strict
