"""Health probes; they need no key and say nothing secret (docs/operations.md).

- ``GET /healthz``: 200 once the models have loaded, 503 before (kept as it was: the
  start-up check of scripts and tests).
- ``GET /livez``: liveness, 200 while the process answers (Kubernetes ``livenessProbe``).
- ``GET /readyz``: readiness, 200 when the store, the rate limiter and every deployment are
  usable, else 503 with the failed checks (``readinessProbe``, load-balancer health checks);
  ``?exclude=deployments`` (repeatable) leaves a check out, as Kubernetes' own ``/readyz``.

Each answers ``HEAD`` too, for load balancers that probe with it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cerulean.api.deps import StateDep
from cerulean.services.readiness import check_readiness

__all__ = ["PUBLIC_PATHS", "router"]

router = APIRouter()
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
_NO_STORE = {"cache-control": "no-store"}


@router.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=True)
async def healthz(state: StateDep) -> JSONResponse:
    if state.ready:
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)
    return JSONResponse({"status": "loading"}, status_code=503, headers=_NO_STORE)


@router.api_route("/livez", methods=["GET", "HEAD"], include_in_schema=True)
async def livez() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


@router.api_route("/readyz", methods=["GET", "HEAD"], include_in_schema=True)
async def readyz(state: StateDep, request: Request) -> JSONResponse:
    exclude = set(request.query_params.getlist("exclude"))
    outcome = await check_readiness(state, exclude)
    status = 200 if outcome.ready else 503
    headers = dict(_NO_STORE)
    if not outcome.ready:
        headers["retry-after"] = "1"
    return JSONResponse(outcome.body(), status_code=status, headers=headers)
