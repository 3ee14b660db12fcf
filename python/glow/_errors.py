"""Status codes and the exception that carries them."""

from __future__ import annotations

import enum

from ._library import lib


class Status(enum.IntEnum):
    """The library's status codes (``GLOW_OK`` and ``GLOW_ERR_*``), pinned by
    the API contract: a code is never renumbered or reused."""

    OK = 0
    ERR_NULL = -1
    ERR_BATCH = -2
    ERR_SHAPE = -3
    ERR_CONFIG = -4
    ERR_CONFIG_SIZE = -5
    ERR_LABEL = -6
    ERR_ARG = -7
    ERR_NOMEM = -8
    ERR_NUMERIC = -9
    ERR_UNSUPPORTED = -10
    ERR_STATE = -11
    ERR_IO = -12
    ERR_FORMAT = -13
    ERR_VERSION = -14
    ERR_BUFFER = -15


def status_string(status: int) -> str:
    """The library's static text for a status code (``glow_status_string``)."""
    return lib.glow_status_string(int(status)).decode("utf-8", "replace")


def last_error() -> str:
    """The calling thread's last detailed error message (``glow_last_error``).

    The library overwrites it on this thread's next failing call; every
    :class:`GlowError` already holds a copy in :attr:`GlowError.message`.
    """
    return lib.glow_last_error().decode("utf-8", "replace")


class GlowError(Exception):
    """A libglow call failed.

    Attributes:
        status: the status code, a :class:`Status` member (a plain ``int`` for
            a code this binding does not know, from a newer library).
        message: the library's detailed message (``glow_last_error()``).
        description: the library's text for the code (``glow_status_string``).
    """

    def __init__(self, status: int, message: str) -> None:
        try:
            self.status: int = Status(status)
        except ValueError:
            self.status = int(status)
        self.message = message
        self.description = status_string(status)
        name = self.status.name if isinstance(self.status, Status) else "status"
        super().__init__(
            f"{message or self.description} (GLOW_{name} = {int(status)})"
        )


def check(status: int) -> None:
    """Raise :class:`GlowError` with the thread's last message unless
    ``status`` is ``GLOW_OK``.  Call it right after the failing call, on the
    same thread: the message is thread-local and only valid until then."""
    if status != Status.OK:
        raise GlowError(status, last_error())
