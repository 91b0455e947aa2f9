"""Identifiers in Azure's formats."""

from __future__ import annotations

import secrets
import string
import uuid

__all__ = ["completion_id", "request_id"]

_ALNUM = string.ascii_letters + string.digits


def completion_id(prefix: str = "chatcmpl-") -> str:
    """An id like Azure's ``chatcmpl-DUbOeGtdzUYiVCXIhCNOIAu2LOGPd`` (29 random characters)."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(29))


def request_id() -> str:
    """A request id (a GUID, as in ``apim-request-id``)."""
    return str(uuid.uuid4())
