"""CPU turns between the llama.cpp contexts of one process: one at a time, first come first
served, and a turn of batch work cut short when another caller asks."""

from __future__ import annotations

import threading
import time

from cerulean.engines.llamacpp.turns import CpuTurns


def test_one_at_a_time_in_arrival_order() -> None:
    turns = CpuTurns()
    order: list[int] = []
    inside = 0
    most = 0
    lock = threading.Lock()

    def work(i: int) -> None:
        nonlocal inside, most
        with turns.turn():
            with lock:
                inside += 1
                most = max(most, inside)
            order.append(i)
            time.sleep(0.01)
            with lock:
                inside -= 1

    with turns.turn():  # the others queue behind this one, in the order they start
        threads = []
        for i in range(5):
            thread = threading.Thread(target=work, args=(i,))
            thread.start()
            threads.append(thread)
            while turns.waiting < i + 1:
                time.sleep(0.001)
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert most == 1
    assert turns.turns == 6 and turns.waiting == 0


def test_an_interruptible_turn_is_cut_short_when_someone_asks() -> None:
    turns = CpuTurns()
    stop = threading.Event()
    entered = threading.Event()

    def batch_step() -> None:
        with turns.turn(interrupt=stop.set):
            entered.set()
            stop.wait(5)  # a decode that runs until it is interrupted

    holder = threading.Thread(target=batch_step)
    holder.start()
    entered.wait(5)
    started = time.monotonic()
    with turns.turn():  # an embedding asks: the batch step stops at once
        waited = time.monotonic() - started
    holder.join(5)
    assert stop.is_set() and waited < 1
    assert turns.interrupted == 1


def test_a_plain_turn_runs_to_its_end() -> None:
    turns = CpuTurns()
    entered = threading.Event()
    release = threading.Event()

    def online_step() -> None:
        with turns.turn():  # no interrupt: an online decode step is never cut short
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=online_step)
    holder.start()
    entered.wait(5)

    def next_in_line() -> None:
        with turns.turn():
            pass

    waiter = threading.Thread(target=next_in_line)
    waiter.start()
    while turns.waiting < 1:
        time.sleep(0.001)
    assert turns.interrupted == 0 and holder.is_alive()
    release.set()
    holder.join(5)
    waiter.join(5)
    assert turns.interrupted == 0


def test_an_interruptible_turn_taken_while_someone_waits_is_cut_at_once() -> None:
    turns = CpuTurns()
    release = threading.Event()
    entered = threading.Event()

    def online_step() -> None:
        with turns.turn():
            entered.set()
            release.wait(5)

    def next_in_line() -> None:
        with turns.turn():
            pass

    holder = threading.Thread(target=online_step)
    holder.start()
    entered.wait(5)
    queued = threading.Thread(target=next_in_line)
    queued.start()
    while turns.waiting < 1:
        time.sleep(0.001)
    stop = threading.Event()
    release.set()
    holder.join(5)
    queued.join(5)
    with turns.turn(interrupt=stop.set):  # nobody waits now: not interrupted
        assert not stop.is_set()
    blocker_entered, blocker_release = threading.Event(), threading.Event()

    def blocker() -> None:
        with turns.turn():
            blocker_entered.set()
            blocker_release.wait(5)

    first = threading.Thread(target=blocker)
    first.start()
    blocker_entered.wait(5)

    def batch_step() -> None:
        with turns.turn(interrupt=stop.set):
            stop.wait(5)  # a decode that runs until it is interrupted

    batch = threading.Thread(target=batch_step)
    batch.start()
    while turns.waiting < 1:
        time.sleep(0.001)
    third = threading.Thread(target=next_in_line)
    third.start()
    while turns.waiting < 2:
        time.sleep(0.001)
    blocker_release.set()  # the batch turn starts with someone behind it: cut on entry
    first.join(5)
    batch.join(5)
    third.join(5)
    assert stop.is_set() and not third.is_alive()
