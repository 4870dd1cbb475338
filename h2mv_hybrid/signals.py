"""SIGTERM as an exception: what cluster schedulers send before the kill, and ``kill PID``.

The ``h2mv`` command installs :func:`raise_on_sigterm` for its whole run: SIGTERM becomes
:class:`Stopped` (as Ctrl-C becomes KeyboardInterrupt), so that atomic writers remove their
temporary stores and the command ends with one line and status 143. While a trainer runs,
:class:`h2mv_hybrid.callbacks.stop.GracefulStop` takes over, to stop every rank of a
distributed fit after the same batch.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Stopped(Exception):
    """A command stopped by a signal (SIGTERM); ``signum`` is the signal's number."""

    def __init__(self, signum: int, where: str = "") -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}" + (f" {where}" if where else ""))


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Signal handler: raise :class:`Stopped` in the main thread."""
    raise Stopped(signum)


def install() -> object:
    """Make SIGTERM raise :class:`Stopped` (main thread only, as Python requires).

    Returns the handler it replaced (None outside the main thread), for :func:`uninstall`.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, raise_on_sigterm)


def uninstall(previous: object) -> None:
    """Put back the SIGTERM handler :func:`install` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
