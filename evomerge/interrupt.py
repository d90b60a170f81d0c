"""Ctrl-C as a request to stop between evaluations, not an exception that can land anywhere.

A KeyboardInterrupt raised by Python's default handler lands wherever the main thread happens to
be, including inside a garbage-collection or weakref callback, where Python prints "Exception
ignored" and swallows it: the run then goes on as if Ctrl-C had never been pressed. Inside
``stop_on_interrupt()`` the first SIGINT only sets a flag that the search loops poll after each
evaluation (they stop cleanly, state saved); a second SIGINT raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_requested = threading.Event()


def requested() -> bool:
    """True once Ctrl-C was pressed inside ``stop_on_interrupt``."""
    return _requested.is_set()


@contextmanager
def stop_on_interrupt(message: str = "stopping after the current evaluation (Ctrl-C again to abort now)"
                      ) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if _requested.is_set():
            raise KeyboardInterrupt
        _requested.set()
        print(f"\n{message}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()
