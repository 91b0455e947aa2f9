"""The local issuer's public keys (JWKS), served where the server trusts that issuer.

``GET /cerulean/local-issuer/keys``: no credentials (a JWKS is public), and Azure's 404 unless
the server runs with ``--trust-local-issuer``; another Cerulean can then trust this one's local
tokens with ``CERULEAN_ENTRA_ISSUER=urn:cerulean:local-issuer`` and
``CERULEAN_ENTRA_JWKS_URL=<this server>/cerulean/local-issuer/keys`` (docs/entra-id.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from cerulean.api.deps import StateDep
from cerulean.errors import ResourceNotFound

__all__ = ["PATH", "router"]

PATH = "/cerulean/local-issuer/keys"
router = APIRouter()


@router.get(PATH)
async def local_issuer_keys(state: StateDep) -> dict[str, Any]:
    if not state.settings.trust_local_issuer:
        raise ResourceNotFound()
    from cerulean.services.local_issuer import local_jwks

    return await run_in_threadpool(local_jwks, state.settings)
