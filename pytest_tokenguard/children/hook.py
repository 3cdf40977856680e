"""The child side: guard a Python process started (or forked) by a guarded test.

Started from the ``.pth`` file the session writes into site-packages (see ``parent``), which calls
:func:`activate` only when ``PYTEST_TOKENGUARD_SPOOL`` is set: a process outside a guarded run pays one
environment lookup. :func:`activate` reads the session file, and attaches the same capture and call checks
as the session, at the moment ``import transformers`` starts (it never imports transformers itself). Every
finding is written to the spool at once, with the process's pid and rank; allow markers, ``expect`` and the
verdict are the session's business.

A process forked from a guarded one (``multiprocessing`` fork, ``DataLoader`` workers) inherits an attached
guard whose recorder lives in the parent's memory: :func:`after_fork` points it at the spool instead.

Nothing here may break a child: a failure is written to the spool as a finding of its own (TG109) and the
child goes on unguarded.
"""

from __future__ import annotations

import os
import sys

from pytest_tokenguard.children import spool

TYPE_CHECKING = False  # not typing's: an armed child imports this module at start-up
if TYPE_CHECKING:
    from typing import Any

#: the recorder of this process, once guarded (activated, or forked from a guarded process)
_recorder: Any = None


def activate() -> None:
    """Guard this process if a live session's spool is named in the environment. Never raises."""
    directory = os.environ.get(spool.SPOOL_ENV)
    try:
        # several sessions' .pth files in one site-packages each call this: the first one arms
        if directory and _recorder is None and not _armed():
            info = spool.read_session(directory)
            if info is not None and info.alive():  # a session that ended, or was killed, leaves nothing active
                _start(directory, info)
    except Exception as exc:  # reported to the session, never raised in the child
        report_error(directory or "", exc)
    finally:
        _forget_imports()


def _armed() -> bool:
    """A trigger is already waiting (this module may be a fresh copy: see :func:`_forget_imports`)."""
    return any(type(finder).__name__ == "_Trigger" and type(finder).__module__ == __name__ for finder in sys.meta_path)


def _forget_imports() -> None:
    """Take the package's modules out of ``sys.modules`` again (this module's functions keep what they use).

    At start-up nothing else has imported them; a child that is itself a pytest run would otherwise find
    ``pytest_tokenguard`` already imported when it marks its plugins for assertion rewriting, and warn
    (``PytestAssertRewriteWarning``, an error under ``-W error``). Imported later, it is imported afresh.
    """
    for name in [name for name in sys.modules if name == "pytest_tokenguard" or name.startswith("pytest_tokenguard.")]:
        del sys.modules[name]


def report_error(directory: str, exc: BaseException) -> None:
    import traceback

    nodeid = spool.running_test()
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    spool.write_record(directory, {"test": nodeid, "origin": spool.origin(), "error": text, "traceback": traceback.format_exc()})


class _Trigger:
    """A ``sys.meta_path`` entry that guards the process when ``import transformers`` starts; finds nothing.
    ``info`` None: only redirect (a forked child, where the session's own trigger attaches)."""

    def __init__(self, directory: str, info: spool.SessionInfo | None) -> None:
        self.directory = directory
        self.info = info

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "transformers" or name.startswith("transformers."):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                _attach(self.directory, self.info)
            except Exception as exc:
                report_error(self.directory, exc)
        return None


def _start(directory: str, info: spool.SessionInfo) -> None:
    # Nothing of the guard is imported here: at start-up (site.py, .pth files in name order) later .pth files
    # may not have put the guard's own dependencies on sys.path yet.
    if "transformers" in sys.modules:
        _attach(directory, info)
    else:
        sys.meta_path.insert(0, _Trigger(directory, info))


def _attach(directory: str, info: spool.SessionInfo | None) -> None:
    """A started child (``info``: the session's): attach the guard with the session's options, its findings to
    the spool; a session of this process's own (a child that runs pytest) still judges its own tests. A forked
    child (``info`` None): redirect the guard it inherited, and any that attaches later, to the spool."""
    from pytest_tokenguard.guard import routing

    recorder = _spool_recorder(directory)
    if info is None:
        routing.redirect(recorder)
        return
    from pytest_tokenguard.guard.calls import Options

    state = routing.GuardState(Options(info.synthesize, info.calls, info.strict))
    routing.enter(state)
    routing.receive(state, recorder)


def _spool_recorder(directory: str) -> Any:
    global _recorder
    from pytest_tokenguard.guard.findings import TestRecorder

    nodeid = spool.running_test()

    class SpoolRecorder(TestRecorder):
        """Writes each finding to the spool instead of keeping it (the session counts and judges)."""

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
            finding: dict[str, Any] = {"code": code, "title": title, "message": message, "logger": logger}
            finding.update(channel=channel, level=level, fix=fix, details=details or {}, severity=severity)
            spool.write_record(directory, {"test": nodeid, "origin": spool.origin(), "finding": finding})

    _recorder = SpoolRecorder()
    return _recorder


def after_fork() -> None:
    """``os.register_at_fork(after_in_child=...)``, registered by a session that guards children: what the
    forked child's inherited guard finds goes to the spool, not to the parent's recorder (in memory here)."""
    directory = os.environ.get(spool.SPOOL_ENV)
    if not directory or _recorder is not None:
        return  # not guarding children; or already spooling (the pid is read per record)
    try:
        # the routing the session imported (``from pytest_tokenguard.guard import routing``: the package's attribute)
        routing = getattr(sys.modules.get("pytest_tokenguard.guard"), "routing", None)
        if routing is not None:  # the guard is loaded: redirect it now
            _attach(directory, None)
        else:  # at the child's ``import transformers``, before the session's own trigger attaches
            sys.meta_path.insert(0, _Trigger(directory, None))
    except Exception as exc:
        report_error(directory, exc)
