"""A minimal event loop for the fork server: readers, writers and timers on ``epoll``.

The fork server (:mod:`sigrun.runner.forkserver`) cannot use asyncio: importing
it brings threading, ssl and some hundred modules, and every child is forked
from the fork server, so each of them would pay for that (fork copies more page
tables, and threading's fork hooks run in every child).  This loop does the
three things :class:`sigrun.runner.children.Children` needs (``add_reader``,
``remove_reader``, ``call_later``, with asyncio's signatures) plus writers for
the fork server's own output, and nothing else: no tasks, no futures, no
signals, one thread.  It sits on ``select.epoll`` directly, not on
``selectors``: after every fork each page the fork server writes costs a
copy-on-write fault, so the per-event path is kept to a few objects.

A callback that removes a reader stops that reader's pending event in the same
iteration from being delivered, so a closed fd number that was reused at once
never reaches the old callback.
"""

from __future__ import annotations

import heapq
import itertools
import select
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Reactor", "Timer"]


class _Handle:
    __slots__ = ("args", "callback", "cancelled")

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.callback = callback
        self.args = args
        self.cancelled = False


class Timer:
    """A call scheduled by :meth:`Reactor.call_later`; :meth:`cancel` stops it."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    """One-threaded readiness loop: call :meth:`run_once` until done."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handles: dict[int, _Handle] = {}  # fd -> what to call when it is ready
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()  # ties in time run in scheduling order

    def fileno(self) -> int:
        """The epoll fd, which children need not inherit."""
        return self._epoll.fileno()

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self._register(fd, select.EPOLLIN, _Handle(callback, args))

    def remove_reader(self, fd: int) -> bool:
        return self._unregister(fd)

    def add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self._register(fd, select.EPOLLOUT, _Handle(callback, args))

    def remove_writer(self, fd: int) -> bool:
        return self._unregister(fd)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for readiness (or the next timer, or ``timeout``), then run what is due."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        wait = -1.0 if timeout is None else timeout
        if timers:
            until_timer = max(0.0, timers[0][0] - time.monotonic())
            wait = until_timer if wait < 0 else min(wait, until_timer)
        ready = [self._handles.get(fd) for fd, _ in self._epoll.poll(wait)]
        for handle in ready:  # looked up before any callback runs: see the module docstring
            if handle is not None and not handle.cancelled:
                handle.callback(*handle.args)
        if timers and timers[0][0] <= time.monotonic():
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    timer.cancelled = True  # ran: a late cancel() is harmless
                    timer.callback(*timer.args)

    def close(self) -> None:
        self._epoll.close()

    def _register(self, fd: int, events: int, handle: _Handle) -> None:
        old = self._handles.get(fd)
        self._handles[fd] = handle
        if old is None:
            self._epoll.register(fd, events)
        else:
            old.cancelled = True
            self._epoll.modify(fd, events)

    def _unregister(self, fd: int) -> bool:
        handle = self._handles.pop(fd, None)
        if handle is None:
            return False
        handle.cancelled = True
        self._epoll.unregister(fd)
        return True
