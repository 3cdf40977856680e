"""Which test receives what transformers logs and what the call checks find, across nested sessions.

Every pytest session (one ``pytest.Config``) owns a :class:`GuardState` in ``config.stash``: its options
and the recorder of the test it is running. Sessions nest: pytester's ``runpytest()`` runs a whole
session inside a test of the outer one. Live states are kept outermost first; the innermost state with
a running test receives. Entering a state attaches the log capture and the call wrappers, leaving it
detaches them, both reference-counted, so an inner session that ends leaves the outer guard exactly as
it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_tokenguard.guard import capture

if TYPE_CHECKING:
    from pytest_tokenguard.guard.calls import Options
    from pytest_tokenguard.guard.findings import TestRecorder


@dataclass(eq=False)
class GuardState:
    """One session's view of the guard: its call-check options and the test recorder now receiving."""

    options: Options | None = None
    recorder: TestRecorder | None = None
    entered: bool = False


#: live states, outermost first
_live: list[GuardState] = []
#: the innermost live state with a running test (None: nothing receives); read on every wrapped call
current: GuardState | None = None
#: in a process forked from a guarded one: the recorder that receives instead of any session's (the spool)
_redirect: TestRecorder | None = None


def enter(state: GuardState) -> None:
    """Attach the capture and the call wrappers for ``state`` (idempotent per state)."""
    if state.entered:
        return
    from pytest_tokenguard.guard import calls

    state.entered = True
    _live.append(state)
    capture.attach()
    if state.options is not None:
        calls.acquire(state.options)
    _refresh()


def leave(state: GuardState) -> None:
    """Undo :func:`enter` for ``state``; the last state to leave restores logging and the wrapped methods."""
    if not state.entered:
        return
    from pytest_tokenguard.guard import calls

    state.entered = False
    state.recorder = None
    _live.remove(state)
    if state.options is not None:
        calls.release(state.options)
    capture.detach()
    _refresh()


def receive(state: GuardState, recorder: TestRecorder | None) -> None:
    """``recorder`` (None: no test running) now receives what happens in ``state``'s session."""
    state.recorder = _redirect if _redirect is not None and recorder is not None else recorder
    _refresh()


def redirect(recorder: TestRecorder) -> None:
    """From now on ``recorder`` receives whatever any session's test would have (a forked child: the
    recorders in its memory belong to the parent, whose verdicts it never reaches)."""
    global _redirect
    _redirect = recorder
    for state in _live:
        if state.recorder is not None:
            state.recorder = recorder
    _refresh()


@contextmanager
def guarding(recorder: TestRecorder, options: Options | None = None) -> Iterator[GuardState]:
    """Guard the block outside pytest (scripts, benchmarks): ``recorder`` receives, ``options`` drive the
    call checks (None: no call checks)."""
    state = GuardState(options)
    enter(state)
    receive(state, recorder)
    try:
        yield state
    finally:
        leave(state)


def _refresh() -> None:
    global current
    current = next((state for state in reversed(_live) if state.recorder is not None), None)
    capture.set_sink(current.recorder.sink if current is not None and current.recorder is not None else None)
