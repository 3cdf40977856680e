"""The session's side: make every Python process a guarded test starts report back to it.

How (after coverage.py 7.10's ``[run] patch = subprocess``): for the duration of the run a ``.pth`` file sits
in the interpreter's site-packages. Python executes it at every start-up; it costs one environment lookup
(``PYTEST_TOKENGUARD_SPOOL``) and does nothing else unless that variable is set, which the session does for
what it starts (the variable is inherited by children, grandchildren, ``torchrun`` workers). The file is
removed when the session ends; one left by a killed session activates nothing (the hook finds no live
session) and is removed by the next session on this host.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from pytest_tokenguard.children import spool

#: ``<prefix>-<host>-<pid>.pth``: one per pytest process (nested sessions share it), so that sessions running
#: side by side (xdist workers, parallel jobs on one virtual environment) never remove each other's
PTH_PREFIX = "pytest_tokenguard_children"

_PTH_TEMPLATE = (
    "import os; exec({code!r}) if {variable!r} in os.environ else None  # pytest-tokenguard: guards the child "
    "processes of a running pytest session; removed when the session ends\n"
)
_PTH_CODE = (
    "try:\n"
    "    from pytest_tokenguard.children.hook import activate\n"
    "except ImportError:\n"
    "    import sys\n"
    "    sys.path.append({package_root!r})\n"
    "    try:\n"
    "        from pytest_tokenguard.children.hook import activate\n"
    "    except ImportError:\n"
    "        activate = None\n"
    "if activate is not None:\n"
    "    activate()\n"
)


def pth_text(package_root: str) -> str:
    """The ``.pth`` line: activate the hook when the spool variable is set. ``package_root`` (the directory
    holding ``pytest_tokenguard``) is appended to ``sys.path`` only if the child cannot import the package
    otherwise (a run from a source tree)."""
    return _PTH_TEMPLATE.format(code=_PTH_CODE.format(package_root=package_root), variable=spool.SPOOL_ENV)


def site_packages() -> Path:
    """Where the ``.pth`` goes: the running interpreter's ``purelib`` (``sysconfig``), the site-packages
    directory children started with ``sys.executable`` (or this environment's scripts) process."""
    return Path(sysconfig.get_path("purelib"))


class _PthFile:
    """The ``.pth`` file of this process, reference-counted across nested sessions."""

    def __init__(self) -> None:
        self.users = 0
        self.path: Path | None = None

    def acquire(self) -> Path:
        if self.users == 0:
            directory = site_packages()
            remove_stale(directory)
            path = directory / f"{PTH_PREFIX}-{spool.host()}-{os.getpid()}.pth"
            package_root = str(Path(__file__).resolve().parents[2])
            temporary = path.with_suffix(".tmp")
            temporary.write_text(pth_text(package_root), encoding="utf-8")
            os.replace(temporary, path)
            self.path = path
        self.users += 1
        assert self.path is not None
        return self.path

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None


_pth = _PthFile()
_fork_hook_registered = False


def remove_stale(directory: Path) -> list[Path]:
    """Remove the ``.pth`` files that killed sessions on this host left in ``directory``; returns them."""
    removed = []
    prefix = f"{PTH_PREFIX}-{spool.host()}-"
    for path in directory.glob(f"{PTH_PREFIX}-*.pth"):
        pid = path.stem[len(prefix) :] if path.name.startswith(prefix) else ""
        if pid.isdigit() and not spool.SessionInfo(int(pid), spool.host()).alive():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


class ChildGuard:
    """One session's child-process guard: its spool directory, the ``.pth`` file, the two variables.

    :meth:`start` raises ``OSError`` when the spool or the ``.pth`` file cannot be written (the session says
    so and runs on without it).
    """

    def __init__(self, base: Path, info: spool.SessionInfo, *, shared: bool = False) -> None:
        self.base = base
        self.info = info
        #: the spool may be written from other machines (``--tokenguard-spool``): list it at every phase
        self.shared = shared
        self.directory: str | None = None
        self._previous: dict[str, str | None] = {}
        self._pth: Path | None = None
        self._wake: mmap.mmap | None = None
        #: the variables are set (a guarded test of this session runs, or ran last)
        self._set = False

    def start(self) -> None:
        global _fork_hook_registered
        self.base.mkdir(parents=True, exist_ok=True)
        directory = tempfile.mkdtemp(prefix=f"tokenguard-children-{self.info.host}-{self.info.pid}-", dir=self.base)
        try:
            spool.write_session(directory, self.info)
            if not self.shared:
                with open(os.path.join(directory, spool.WAKE_FILE), "w+b") as handle:
                    handle.write(b"\x00")
                    handle.flush()
                    self._wake = mmap.mmap(handle.fileno(), 1)
            self._pth = _pth.acquire()
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self.directory = directory
        self._previous = {name: os.environ.get(name) for name in (spool.SPOOL_ENV, spool.TEST_ENV)}
        if not _fork_hook_registered and hasattr(os, "register_at_fork"):
            from pytest_tokenguard.children import hook

            os.register_at_fork(after_in_child=hook.after_fork)
            _fork_hook_registered = True

    def running(self, nodeid: str) -> None:
        """What this session starts from now on belongs to the test (or test module) ``nodeid``. One variable
        is set per guarded test; the spool's stays set from one guarded test to the next."""
        if not self._set:
            assert self.directory is not None
            os.environ[spool.SPOOL_ENV] = self.directory
            self._set = True
        os.environ[spool.TEST_ENV] = nodeid

    def idle(self) -> None:
        """No guarded test of this session runs (an unguarded one, or none): what starts now is not guarded by
        this session (nested, whatever started it guards it)."""
        if self._set:
            self._set = False
            for name, value in self._previous.items():
                _restore(name, value)

    def pending(self) -> bool:
        """Whether records may have arrived since the last :meth:`drain`: one read of the mapped wake-up byte
        (a shared spool: always, it is listed every time)."""
        wake = self._wake
        return wake is None or wake[0] != 0

    def drain(self) -> list[dict[str, Any]]:
        """The records children left since the last drain (one ``listdir``)."""
        if self.directory is None:
            return []
        if self._wake is not None:
            self._wake[0] = 0  # before listing: a record renamed after the listing sets it again
        return list(spool.drain(self.directory))

    def stop(self) -> list[dict[str, Any]]:
        """Drain what is left, remove the spool and the ``.pth`` file (the last session of this process), and
        restore the variables. Idempotent."""
        if self.directory is None:
            return []
        records = self.drain()
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        self.idle()
        if self._pth is not None:
            _pth.release()
            self._pth = None
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
        return records


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


#: the logger name of the finding recorded when a child's hook failed (TG109)
HOOK_LOGGER = "pytest_tokenguard.children"


def add_record(recorder: Any, record: dict[str, Any], *, after_test: bool = False) -> None:
    """Record one spool record in ``recorder`` (a ``TestRecorder``) with the child's origin (pid, host,
    rank). A hook error, or a record that is not well-formed, is a TG109."""
    from pytest_tokenguard.guard.catalog import BY_CODE
    from pytest_tokenguard.guard.findings import AFTER_TEST

    origin = dict(record.get("origin") or {})
    extra = {AFTER_TEST: True} if after_test else {}
    finding = record.get("finding")
    try:
        if isinstance(finding, dict) and "error" not in record:
            details = dict(finding.get("details") or {}, **extra)
            recorder.add(
                str(finding["code"]),
                str(finding["title"]),
                str(finding["message"]),
                str(finding["logger"]),
                str(finding["channel"]),
                str(finding["level"]),
                str(finding["fix"]),
                details,
                finding.get("severity"),
                origin=origin,
            )
            return
        error = record.get("error") or f"not a tokenguard spool record: {record!r}"
    except KeyError as exc:
        error = f"spool record without {exc}: {record!r}"
    entry = BY_CODE["TG109"]
    message = f"tokenguard could not guard child process {origin.get('pid', '?')}: {error}"
    details = {"traceback": record.get("traceback")} if record.get("traceback") else {}
    recorder.add("TG109", entry.title, message, HOOK_LOGGER, "hook", "ERROR", entry.fix, dict(details, **extra), origin=origin)
