"""The spool: a directory where guarded child processes leave their findings for the pytest session.

Both sides agree on these, and nothing else:

* ``PYTEST_TOKENGUARD_SPOOL`` (the spool directory of the live session; its presence is what turns the
  child hook on) and ``PYTEST_TOKENGUARD_TEST`` (the node id of the guarded test now running), both set by
  the session while guarded tests run and inherited by whatever they start;
* ``session`` in the spool (``key=value`` lines): who the session is (host, pid: a child of a killed session
  finds no live parent and does nothing) and the options the children apply (``--tokenguard-calls``,
  strict, synthesis);
* ``wake`` in a local spool: one byte a child sets after each record (the session maps it into memory);
* one ``<time_ns>-<pid>-<n>.json`` file per finding, written to a temporary name and renamed, so the
  session never reads half a record. The session drains (reads and removes) them at the end of each phase
  when the wake-up byte says something arrived.

Nothing here imports transformers, pytest or the rest of the guard, nor ``typing``, ``dataclasses`` or
``json`` until a record is written: an armed child loads this module at start-up.
"""

from __future__ import annotations

import itertools
import os
import time

TYPE_CHECKING = False  # not typing's: importing typing costs an armed child milliseconds
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

SPOOL_ENV = "PYTEST_TOKENGUARD_SPOOL"
TEST_ENV = "PYTEST_TOKENGUARD_TEST"
SESSION_FILE = "session"
#: a one-byte file in a local spool: a child sets the byte after each record; the session, which maps the file
#: into memory, knows from one memory read per phase whether anything arrived, without listing the directory
WAKE_FILE = "wake"
#: what a session file larger than this is (not ours): refused before reading
_MAX_SESSION_BYTES = 64 * 1024

_sequence = itertools.count()


def host() -> str:
    """This machine's name (``os.uname().nodename``; no socket import in every child)."""
    uname = getattr(os, "uname", None)
    if uname is not None:
        return str(uname().nodename)
    import socket  # Windows

    return socket.gethostname()


class SessionInfo:
    """The ``session`` file: the pytest session that owns a spool, and the options its children apply."""

    __slots__ = ("calls", "host", "pid", "strict", "synthesize")

    def __init__(self, pid: int, host: str, synthesize: str = "never", calls: bool = False, strict: bool = False) -> None:
        self.pid = pid
        self.host = host
        self.synthesize = synthesize
        self.calls = calls
        self.strict = strict

    def alive(self) -> bool:
        """Whether the owning session still runs. On its own host: its pid exists. On another host (a remote
        node writing to a shared spool) the pid means nothing there: the session file existing is the sign
        (the session removes its spool when it ends)."""
        if self.host != host():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        except OSError:
            return False
        return True


def write_session(spool: str, info: SessionInfo) -> None:
    _write_atomic(spool, SESSION_FILE, "".join(f"{name}={getattr(info, name)}\n" for name in SessionInfo.__slots__))


def read_session(spool: str) -> SessionInfo | None:
    """The session file of ``spool``; None when there is none (the session ended or never was). Raises
    ``ValueError`` for a file that is not one (reported to the session by the hook)."""
    path = os.path.join(spool, SESSION_FILE)
    try:
        if os.path.getsize(path) > _MAX_SESSION_BYTES:
            raise ValueError(f"{path} is larger than {_MAX_SESSION_BYTES} bytes: not a tokenguard session file")
        with open(path, encoding="utf-8") as handle:
            fields = dict(line.split("=", 1) for line in handle.read().splitlines() if "=" in line)
    except FileNotFoundError:
        return None
    try:
        return SessionInfo(
            pid=int(fields["pid"]),
            host=fields["host"],
            synthesize=fields.get("synthesize", "never"),
            calls=fields.get("calls") == "True",
            strict=fields.get("strict") == "True",
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path} is not a tokenguard session file: {exc!r}") from None


def running_test() -> str:
    """The node id of the test this process was started (or forked) in; ``""`` if none."""
    return os.environ.get(TEST_ENV, "")


def origin() -> dict[str, Any]:
    """Where a finding comes from: this process's pid and host, and under torch.distributed its ``RANK`` and
    ``LOCAL_RANK`` (as ``torchrun`` / ``accelerate launch`` set them), None outside."""
    return {"pid": os.getpid(), "host": host(), "rank": _int_env("RANK"), "local_rank": _int_env("LOCAL_RANK")}


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def write_record(spool: str, record: dict[str, Any]) -> bool:
    """Leave one record (a finding or a hook error) for the session. Returns False when the spool is gone
    or unwritable (the session ended): never raises, a child must not break on it."""
    name = f"{time.time_ns():020d}-{os.getpid()}-{next(_sequence)}.json"
    try:
        import json

        _write_atomic(spool, name, json.dumps(record, default=repr))
    except (OSError, TypeError, ValueError):
        return False
    try:  # after the rename: a session that sees the byte set finds the record
        fd = os.open(os.path.join(spool, WAKE_FILE), os.O_WRONLY)
    except OSError:  # none (a shared spool: the session lists it every phase), or the session just ended
        return True
    try:
        os.write(fd, b"\x01")
    except OSError:
        pass
    finally:
        os.close(fd)
    return True


def _write_atomic(spool: str, name: str, text: str) -> None:
    """``text`` into ``spool/name`` through a hidden temporary file and a rename: a reader never sees half of it."""
    temporary = os.path.join(spool, f".{name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, os.path.join(spool, name))


def drain(spool: str) -> Iterator[dict[str, Any]]:
    """Read and remove the records in ``spool``, oldest first. A file that is not a readable record is
    removed and yielded as ``{"error": ...}`` (the session reports it; nothing is lost silently)."""
    try:
        names = os.listdir(spool)
    except FileNotFoundError:
        return
    names = sorted(name for name in names if name.endswith(".json") and not name.startswith("."))
    if not names:
        return
    import json

    for name in names:
        path = os.path.join(spool, name)
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            record = {"error": f"unreadable spool record {name}: {exc}", "origin": {}}
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        yield record
