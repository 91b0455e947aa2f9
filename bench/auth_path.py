"""The cost of authentication per request: AuthMiddleware alone, in-process (no HTTP, no model).

Times the key path (``api-key``, and a key as a bearer) and, where the code has Entra ID, the
token path (a cached JWKS, a cached role assignment), with the app's own wiring: a real
``KeyRing`` over a real SQLite store (re-read every ``key_cache_seconds``). Run it with one
checkout's code first on the path to compare two versions::

    flock /tmp/bench.lock env PYTHONPATH=src .venv/bin/python bench/auth_path.py

It prints JSON: microseconds per request, the median of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cerulean.api.middleware import AuthMiddleware
from cerulean.services.keys import KeyRing, provision_keys
from cerulean.settings import Settings
from cerulean.store.home import open_store
from cerulean.store.sql import SqlStore

KEY = "0123456789abcdef0123456789abcdef"
PATH = "/openai/deployments/gpt-4/chat/completions"


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _noop_send(message: Any) -> None:
    return None


async def _receive() -> Any:
    return {"type": "http.request", "body": b""}


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": PATH, "headers": headers}


async def _time(middleware: Any, headers: list[tuple[bytes, bytes]], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await middleware(_scope(headers), _receive, _noop_send)
    return (time.perf_counter() - started) / n * 1e6


async def _build(home: Path) -> tuple[Any, dict[str, list[tuple[bytes, bytes]]], Any]:
    settings = Settings(home=home, key1=KEY)  # type: ignore[arg-type]
    store = open_store(settings)
    keys = provision_keys(store, settings)
    ring = KeyRing(keys.verifier, store, ttl=settings.key_cache_seconds)

    async def refresh(failed: bool) -> bool:
        return await ring.refresh(failed=failed)

    kwargs: dict[str, Any] = {"verifier": lambda: ring.verifier, "public": frozenset()}
    kwargs["refresh"] = refresh
    cases = {
        "api-key": [(b"api-key", KEY.encode())],
        "bearer key": [(b"authorization", f"Bearer {KEY}".encode())],
    }
    entra = None
    if "entra" in inspect.signature(AuthMiddleware.__init__).parameters:
        entra = await _entra(settings, store)
        token = entra[1]
        kwargs["entra"] = lambda: entra[0]
        kwargs["local_auth_disabled"] = lambda: ring.local_auth_disabled
        cases["entra token"] = [(b"authorization", f"Bearer {token}".encode())]
    return AuthMiddleware(_inner, **kwargs), cases, store


async def _entra(settings: Settings, store: SqlStore) -> tuple[Any, str]:
    from cerulean.services.entra import StaticKeys, TokenValidator, audience_variants
    from cerulean.services.identity import EntraAuth
    from cerulean.services.local_issuer import LOCAL_ISSUER, issue_token, local_keys
    from cerulean.services.rbac import RoleAssignments

    oid = "aaaaaaaa-0000-4000-8000-000000000001"
    store.add_role_assignment(oid, "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd")
    auth = EntraAuth(
        validator=TokenValidator({LOCAL_ISSUER: StaticKeys(local_keys(settings))}, leeway=60),
        roles=RoleAssignments(store, ttl=settings.key_cache_seconds),
        data_audiences=audience_variants(settings.entra_audience),
        management_audiences=(),
    )
    return auth, issue_token(settings, oid)


async def main(rounds: int, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        middleware, cases, store = await _build(Path(tmp) / "home")
        results: dict[str, list[float]] = {name: [] for name in cases}
        for headers in cases.values():
            await _time(middleware, headers, 200)  # warm-up
        for _ in range(rounds):
            for name, headers in cases.items():
                results[name].append(await _time(middleware, headers, n))
        store.close()
    return {name: round(statistics.median(values), 2) for name, values in results.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-n", type=int, default=5000, help="requests per round and case")
    args = parser.parse_args()
    print(json.dumps({"us_per_request": asyncio.run(main(args.rounds, args.n))}))
