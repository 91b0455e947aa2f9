"""Identifiers in Azure's formats."""

from __future__ import annotations

import secrets
import string
import uuid

__all__ = ["completion_id", "request_id"]

_ALNUM = string.ascii_letters + string.digits
_ID_LENGTH = 29
_ID_SPACE = len(_ALNUM) ** _ID_LENGTH


def completion_id(prefix: str = "chatcmpl-") -> str:
    """An id like Azure's ``chatcmpl-DUbOeGtdzUYiVCXIhCNOIAu2LOGPd`` (29 random characters)."""
    # One draw from the system's randomness, written in base 62, rather than a draw a
    # character (29 reads of os.urandom on every request): as uniform, and one read.
    value = secrets.randbelow(_ID_SPACE)
    chars = []
    for _ in range(_ID_LENGTH):
        value, digit = divmod(value, len(_ALNUM))
        chars.append(_ALNUM[digit])
    return prefix + "".join(chars)


def request_id() -> str:
    """A request id (a GUID, as in ``apim-request-id``)."""
    return str(uuid.uuid4())
