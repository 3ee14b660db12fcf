"""A readers-writer lock: the binding's guard of the C contract's rules on
threads.

Inference calls may run concurrently on one model; calls that change it
(data_init, backward, zero_grad, set_option) need exclusive access.  In C
breaking that rule is undefined behaviour; from Python it must never crash
the interpreter, so every model carries one of these locks and each call
takes it shared or exclusive.  A waiting writer goes before readers that
come after it, so a stream of inference calls cannot starve training.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class RWLock:
    """Many holders in shared mode, or one in exclusive mode.  Not
    re-entrant: a thread holding it must not take it again."""

    __slots__ = ("_cond", "_readers", "_writer", "_waiting")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting = 0  # writers waiting

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
