"""Preemption is Ctrl-C: SIGTERM (``kill``, ``docker stop``, SLURM and Kubernetes preemption)
stops training as SIGINT does, at the end of the current update, with a checkpoint written.

The command line then exits with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT), the code
a shell gives a process the signal ended, so a scheduler sees the run was stopped, not done;
``logtrick train --resume RUN_DIR`` continues it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "StopSignals", "Terminated", "exit_code", "terminate_as_interrupt"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The first SIGINT or SIGTERM asks the loop to stop after the current update
    (:attr:`received` is its number); a second one raises ``KeyboardInterrupt``."""

    def __init__(self) -> None:
        self.received = 0
        self.previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received != 0

    def __enter__(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not in the main thread: the signals stay as they are
                break
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received:
            raise Terminated(signum) if signum == signal.SIGTERM else KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous = {}


def exit_code(signum: int) -> int:
    """``128 + signum``: how a shell reports a process a signal stopped (0: no signal)."""
    return 128 + signum if signum else 0


class Terminated(KeyboardInterrupt):
    """SIGTERM where no loop is there to finish an update: stop at once, as Ctrl-C does."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """In the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main
    thread, as SIGINT does: the command line's cleanups run (a new run directory without a
    checkpoint is removed) instead of the process vanishing. The training loop handles both
    its own way; the previous handler is restored after the block."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
