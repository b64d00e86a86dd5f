"""Interruptions: Ctrl-C (SIGINT) and SIGTERM during long work.

Long loops hold interruptions until a safe point (the end of a training step) with
:func:`deferred_interrupts`, so that the state they save on the way out is a consistent one.
"""

from __future__ import annotations

import contextlib
import signal
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
