"""SIGINT and SIGTERM in the harness process: recorded by the handler, so never lost, and acted on at safe points.

Python runs a signal handler in the main thread between two bytecodes, wherever that thread is. An exception raised
by the handler is *dropped* when that place is a ``__del__`` finalizer or a weakref callback (Python prints "Exception
ignored in ..." and carries on), so a handler that only raises can lose the signal (finding F2: 3 runs in 40 ended
``completed`` after a SIGTERM during start-up). Here the handler first records the signal; the run checks the record
with :func:`check` at its safe points (after the run folder and manifest exist, after the backend started, every 0.1 s
while LoadGen runs, before it declares a run completed). Around long blocking calls that cannot poll (a backend's
``start``, which may load a model for minutes) :func:`raising` also lets the handler raise :class:`Interrupted` at
once; if that exception is dropped by a finalizer or a weakref callback (e.g. importlib's module-lock callback, when
the signal lands during an import), the record is still there for the next check, and the dropped exception is not
printed (``sys.unraisablehook``): the handler may raise again at the next signal.

Moments of the process's life and what a signal does in each:

- interpreter start-up, before ``python -m mlperf_assets.harness`` runs its ``__main__`` (50 ms on an idle machine,
  200 ms and more on a loaded one): the default dispositions apply. SIGTERM ends the process (killed by signal 15: a
  shell reports 143, ``subprocess`` -15); SIGINT raises KeyboardInterrupt in Python's start-up, which exits by
  re-sending itself SIGINT (130 / -2), or, while Python imports ``site``, with its "Fatal Python error:
  init_import_site" and exit code 1. Nothing has been written yet (no run folder). A launcher that starts the
  harness with SIGINT/SIGTERM *blocked* (the signal mask survives ``exec``) closes this window: a signal then stays
  pending until :func:`install` unblocks it, and is handled like any other (exit 130 / 143, manifest
  ``interrupted``).
- from ``__main__``'s first statement on: handled here. ``run`` exits 130 (SIGINT) or 143 (SIGTERM) and marks the run
  folder's manifest ``interrupted`` (the folder is created for it if the signal came while the inputs were read);
  ``prepare-dataset`` exits 130 / 143 and writes no output file.
- once the outcome is written to the manifest: a further signal makes the process leave at once with the code of that
  outcome (the backend's shutdown is not waited for). A signal that arrives after a run was recorded ``completed``
  does not change it: the exit code always agrees with the manifest.

Only for the harness's own process (``__main__`` installs the handler; :func:`reclaim` restores it if a backend's
engine replaced it); imported as a library, nothing is installed and :func:`check` never raises.
"""

from __future__ import annotations

# Imported first thing by __main__: only modules Python's start-up has already loaded, so the handlers come early.
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_SIGINT, EXIT_SIGTERM = 130, 143
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_DESCRIPTION = {signal.SIGINT: "interrupted (SIGINT, Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the harness (a KeyboardInterrupt, so ``except Exception`` never swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signum)

    def __str__(self) -> str:
        return describe(self.signum)


class _State:
    received: int | None = None  # the first signal; later ones do not change the outcome
    raising = False  # the handler may raise at once (inside ``raising()``); cleared by the handler when it raises
    leave_with: int | None = None  # the outcome is on disk: a further signal leaves with this code at once
    installed = False
    unraisable_before = staticmethod(sys.__unraisablehook__)


_state = _State()


def exit_code_for(signum: int) -> int:
    return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT


def describe(signum: int) -> str:
    return _DESCRIPTION.get(signum, f"signal {signum}")


def install() -> None:
    """Handle SIGINT and SIGTERM as described above (main thread of the harness process only)."""
    try:
        for sig in SIGNALS:
            signal.signal(sig, _handler)
    except ValueError:  # not the main thread: signals are the process owner's business
        return
    _state.installed = True
    if sys.unraisablehook is not _unraisable:
        _state.unraisable_before = sys.unraisablehook
        sys.unraisablehook = _unraisable
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # a launcher may have blocked them to cover start-up


def reclaim() -> bool:
    """Install the handlers again if a library replaced them (a backend's engine may install its own); True if it
    had to."""
    if not _state.installed:
        return False
    replaced = [sig for sig in SIGNALS if signal.getsignal(sig) is not _handler]
    try:
        for sig in replaced:
            signal.signal(sig, _handler)
    except ValueError:  # not the main thread
        return False
    return bool(replaced)


def _handler(signum: int, frame) -> None:
    if _state.received is None:
        _state.received = signum
    if _state.leave_with is not None:
        leave(_state.leave_with)
    if _state.raising and not _in_finalizer(frame):
        _state.raising = False  # raise once: cleanup code after this point runs without interruptions
        raise Interrupted(_state.received)


def _unraisable(hook_args) -> None:
    """An :class:`Interrupted` that Python dropped (raised in a finalizer or weakref callback) is not an error to
    print: the record stands and the next check acts on it; the handler may raise again. Others go to the hook that
    was there before."""
    if isinstance(hook_args.exc_value, Interrupted):
        _state.raising = True  # still inside raising(): its raise never reached the blocking call
        return
    _state.unraisable_before(hook_args)


def _in_finalizer(frame) -> bool:
    """True inside a ``__del__`` (an exception raised there is dropped: rely on the record instead, and print nothing).
    Weakref callbacks and other places that drop exceptions are not recognised: the record covers them, and
    :func:`_unraisable` keeps the dropped exception from being printed."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def leave(code: int) -> None:
    """Leave the process now with ``code`` (logs and stdio flushed first; no interpreter shutdown)."""
    try:
        import logging

        logging.shutdown()
    except Exception:  # noqa: BLE001, S110 - leaving anyway
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - leaving anyway
            pass
    os._exit(code)


def pending() -> int | None:
    """The signal received so far (None if none)."""
    return _state.received


def check() -> None:
    """Raise :class:`Interrupted` if a signal was received (a safe point)."""
    if _state.received is not None:
        raise Interrupted(_state.received)


@contextmanager
def raising() -> Iterator[None]:
    """Inside the block the handler raises :class:`Interrupted` at once (for long calls that cannot poll the record).
    :func:`check` runs before it; after it the caller checks at its next safe point (a raise dropped by a finalizer
    inside the block leaves only the record)."""
    check()
    _state.raising = True
    try:
        yield
    finally:
        _state.raising = False


def commit_point() -> None:
    """Just before an output is committed (an atomic replace): from here on signals are only recorded, and one
    received so far (even one whose raise a finalizer dropped) raises :class:`Interrupted`, so nothing is committed."""
    stop_raising()
    check()


def stop_raising() -> None:
    """From here on the handler only records (finalisation must not be cut short)."""
    _state.raising = False


def leave_on_signal(code: int) -> None:
    """The outcome (``code``) is written: a further SIGINT/SIGTERM leaves the process at once with it."""
    _state.leave_with = code
