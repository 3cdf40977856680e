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
import traceback
from typing import Any

from pytest_tokenguard.children import spool

#: the recorder of this process, once guarded (activated, or forked from a guarded process)
_recorder: Any = None


def activate() -> None:
    """Guard this process if a live session's spool is named in the environment. Never raises."""
    directory = os.environ.get(spool.SPOOL_ENV)
    if not directory or _recorder is not None:
        return
    try:
        info = spool.read_session(directory)
        if info is None or not info.alive():
            return  # a session that ended, or was killed, leaves nothing that activates
        _start(directory, info)
    except Exception as exc:  # reported to the session, never raised in the child
        report_error(directory, exc)


def report_error(directory: str, exc: BaseException) -> None:
    nodeid, phase = spool.running_test()
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    spool.write_record(
        directory, {"test": nodeid, "phase": phase, "origin": spool.origin(), "error": text, "traceback": traceback.format_exc()}
    )


class _Trigger:
    """A ``sys.meta_path`` entry that guards the process when ``import transformers`` starts; finds nothing.
    ``options`` None: only redirect (a forked child, where the session's own trigger attaches)."""

    def __init__(self, directory: str, options: Any) -> None:
        self.directory = directory
        self.options = options

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "transformers" or name.startswith("transformers."):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                _attach(self.directory, self.options)
            except Exception as exc:
                report_error(self.directory, exc)
        return None


def _start(directory: str, info: spool.SessionInfo) -> None:
    from pytest_tokenguard.guard.calls import Options

    options = Options(info.synthesize, info.calls, info.strict)
    if "transformers" in sys.modules:
        _attach(directory, options)
    else:
        sys.meta_path.insert(0, _Trigger(directory, options))


def _attach(directory: str, options: Any) -> None:
    """Send everything this process's guard finds to the spool; with ``options``, attach the guard too."""
    from pytest_tokenguard.guard import routing

    recorder = _spool_recorder(directory)
    routing.redirect(recorder)  # also what a session attaching later in this process (a fork) receives through
    if options is not None:
        state = routing.GuardState(options)
        routing.enter(state)
        routing.receive(state, recorder)


def _spool_recorder(directory: str) -> Any:
    global _recorder
    from pytest_tokenguard.guard.findings import TestRecorder

    nodeid, phase = spool.running_test()

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
            spool.write_record(directory, {"test": nodeid, "phase": phase, "origin": spool.origin(), "finding": finding})

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
