"""Interruptions: Ctrl-C (SIGINT) and SIGTERM during long work.

Both stop a command the way Ctrl-C stops Python: an exception (:class:`Interrupted`, a
``KeyboardInterrupt``) unwinds the stack, so every ``with`` block on the way removes what it
had half written (:func:`interrupts_raise`, installed by the command line). Long loops hold
interruptions until a safe point (the end of a training step) with :func:`deferred_interrupts`,
so that the state they save on the way out is a consistent one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """Raised at a safe point after SIGINT or SIGTERM; ``signal`` says which."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class InterruptFlag:
    """Set by a signal; checked by the loop at its safe points."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal came."""
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[InterruptFlag]:
    """Within the block, SIGINT and SIGTERM set a flag instead of stopping the program; the
    loop calls ``flag.check()`` where stopping is safe. A second SIGINT stops at once. Off
    the main thread (where handlers cannot be installed) signals act as usual."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        if flag.signum is not None and signum == signal.SIGINT:
            raise Interrupted(signum)  # asked twice: stop now
        flag.signum = signum

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


_held = 0  # depth of interruptions_held blocks
_pending: int | None = None  # a signal that came while held


def _raise_or_hold(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _held:
        _pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise :class:`Interrupted` (by default SIGTERM ends
    Python without unwinding, leaving partial files), except inside
    :func:`interruptions_held`, which raises at its end. Off the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _raise_or_hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def interruptions_held() -> Iterator[None]:
    """Steps that must not be split (creating a temporary file and noting it; renaming it into
    place and forgetting it): an interruption that comes meanwhile is raised when they end."""
    global _held, _pending
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)


def end_with_parent(parent: int) -> None:
    """Have this process sent SIGTERM when its parent process ``parent`` ends (Linux; elsewhere
    nothing is done), so that the helpers of a launcher killed with SIGKILL, which cannot pass
    anything on, stop too (a trainer takes SIGTERM as: finish the step, checkpoint, stop).

    Raises nothing: a parent already gone by the time the request is made is sent the same.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no C library to ask: the helpers outlive a killed launcher
        return
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        import warnings

        warnings.warn(f"cannot ask to end with the launching process ({os.strerror(ctypes.get_errno())})", RuntimeWarning, stacklevel=2)
        return
    if os.getppid() != parent:  # it ended before the request took hold
        os.kill(os.getpid(), signal.SIGTERM)
