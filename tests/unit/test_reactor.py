"""The fork server's event loop: readers, timers, and no callback for a reader already removed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from sigrun.runner.reactor import Reactor


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    loop = Reactor()
    yield loop
    loop.close()


def test_a_ready_reader_is_called_with_its_arguments(reactor: Reactor) -> None:
    r, w = os.pipe()
    seen: list[bytes] = []
    reactor.add_reader(r, lambda fd: seen.append(os.read(fd, 10)), r)
    os.write(w, b"hi")
    reactor.run_once(timeout=1)
    assert seen == [b"hi"]
    reactor.remove_reader(r)
    for fd in (r, w):
        os.close(fd)


def test_timers_run_in_order_and_a_cancelled_one_does_not(reactor: Reactor) -> None:
    ran: list[str] = []
    reactor.call_later(0.02, ran.append, "second")
    reactor.call_later(0.01, ran.append, "first")
    reactor.call_later(0.015, ran.append, "never").cancel()
    deadline = time.monotonic() + 2
    while len(ran) < 2 and time.monotonic() < deadline:
        reactor.run_once()
    assert ran == ["first", "second"]


def test_a_reader_removed_by_an_earlier_callback_is_not_called(reactor: Reactor) -> None:
    """Same loop iteration: the fd may already be closed (and its number reused)."""
    pipes = [os.pipe(), os.pipe()]
    called: list[int] = []

    def first(fd: int) -> None:
        called.append(fd)
        for other_r, _ in pipes:
            if other_r != fd:
                reactor.remove_reader(other_r)

    for r, w in pipes:
        reactor.add_reader(r, first, r)
        os.write(w, b"x")
    reactor.run_once(timeout=1)
    assert len(called) == 1
    for r, w in pipes:
        reactor.remove_reader(r)
        os.close(r)
        os.close(w)


def test_remove_reader_says_whether_there_was_one(reactor: Reactor) -> None:
    r, w = os.pipe()
    assert reactor.remove_reader(r) is False
    reactor.add_reader(r, lambda: None)
    assert reactor.remove_reader(r) is True
    os.close(r)
    os.close(w)
