"""SIGTERM and SIGHUP unwind like Ctrl-C: `main` installs the handler, a command that runs code the
garbage collector may interrupt raises the signal again with `raise_if_signalled`, and `main` turns
the signal into its exit code (128 + signum)."""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = signum


signalled: list[int] = []  # every signal handled so far, the latest last


def terminated(signum, frame) -> None:
    """The handler of SIGTERM and SIGHUP."""
    signalled.append(signum)
    raise Terminated(signum)


def raise_if_signalled() -> None:
    """Raise a signal's Terminated again: raised inside a finaliser (a `__del__` the garbage collector
    ran when the signal came), Python prints it and goes on, and the command would not stop."""
    if signalled:
        raise Terminated(signalled[-1])
