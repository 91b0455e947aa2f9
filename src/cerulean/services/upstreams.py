"""Upstreams: remote inference servers registered by name, and what a probe finds on them.

The CLI (``cerulean upstreams``) calls these functions on the store; a running server follows
the store (:mod:`cerulean.services.gateway`). Credentials are never stored: an upstream names the
environment variable (``--api-key-env``) or the file (``--api-key-file``) that holds its key, read
when a request goes out, and ``show`` masks it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from cerulean.engines.remote.engine import AZURE_API_VERSION, Upstream
from cerulean.engines.remote.flavors import FLAVORS
from cerulean.errors import ControlError
from cerulean.services.keys import mask_key
from cerulean.store.base import Store, UpstreamRecord

__all__ = [
    "Probe",
    "add_upstream",
    "check_upstream_name",
    "describe",
    "get_upstream",
    "probe",
    "remove_upstream",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Probe:
    """What a probe of an upstream found."""

    ok: bool
    detail: str  # what was found, or why it failed, in a sentence
    models: tuple[str, ...] = ()
    context_length: int | None = None
    health: int | None = None  # the health route's status, where the flavor has one

    def as_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "detail": self.detail,
                "models": list(self.models),
                "context_length": self.context_length,
                "health": self.health,
                "probed_at": datetime.now(timezone.utc).isoformat(),
            }
        )


def check_upstream_name(name: str) -> None:
    if not _NAME.match(name):
        raise ControlError(
            f"'{name}' is not a valid upstream name: use 1 to 64 letters, digits, '-', '_' or "
            "'.', starting with a letter or digit (e.g. vllm-east)",
            reason="invalid",
            code="InvalidResourceName",
        )


def _check(record: UpstreamRecord) -> None:
    check_upstream_name(record.name)
    if record.flavor not in FLAVORS:
        raise ControlError(
            f"unknown flavor '{record.flavor}': use one of {', '.join(FLAVORS)}",
            reason="invalid",
            code="InvalidFlavor",
        )
    url = urlparse(record.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ControlError(
            f"'{record.url}' is not an http(s) URL; give the API base as OpenAI clients take it "
            "(http://host:8000/v1) or, for azure and cerulean, the resource endpoint "
            "(https://NAME.openai.azure.com/)",
            reason="invalid",
            code="InvalidUrl",
        )
    if record.api_key_env and record.api_key_file:
        raise ControlError(
            "give --api-key-env or --api-key-file, not both",
            reason="invalid",
            code="InvalidCredential",
        )
    if record.api_key_env and not _ENV.match(record.api_key_env):
        raise ControlError(
            f"'{record.api_key_env}' is not an environment variable name (the key itself is "
            "never given on the command line: export it and name the variable)",
            reason="invalid",
            code="InvalidCredential",
        )
    if FLAVORS[record.flavor].dialect == "azure" and not record.model:
        raise ControlError(
            f"a {record.flavor} upstream needs --model: the name of the deployment to call there",
            reason="invalid",
            code="InvalidModel",
        )
    if record.max_concurrency is not None and record.max_concurrency < 1:
        raise ControlError(
            "--max-concurrency must be at least 1", reason="invalid", code="InvalidValue"
        )
    if not record.weight > 0:
        raise ControlError("--weight must be positive", reason="invalid", code="InvalidValue")


def probe(record: UpstreamRecord, *, timeout: float = PROBE_TIMEOUT_S) -> Probe:
    """Ask the upstream what it serves (models, health, context): blocking, for the CLI."""
    with httpx.Client(timeout=timeout) as client:
        upstream = Upstream(record)
        try:
            return _probe(client, upstream)
        except httpx.HTTPError as exc:
            return Probe(False, f"cannot reach {record.url}: {exc.__class__.__name__}: {exc}")


def _probe(client: httpx.Client, upstream: Upstream) -> Probe:
    record, profile = upstream.record, upstream.profile
    health = None
    if profile.health is not None:
        health = client.get(upstream.root + profile.health).status_code
        if health != 200:
            return Probe(
                False, f"its health route {profile.health} answered {health}", health=health
            )
    if profile.dialect == "azure":
        url = f"{upstream.root}/openai/deployments/{record.model}?api-version=2022-12-01"
        answer = client.get(url, headers=upstream.headers())
        if answer.status_code in (401, 403):
            return Probe(False, f"the key was refused (HTTP {answer.status_code})", health=health)
        if answer.status_code == 404:
            return Probe(False, f"no deployment '{record.model}' there (HTTP 404)", health=health)
        if answer.status_code != 200:
            return Probe(False, f"GET deployment answered HTTP {answer.status_code}", health=health)
        model = str(answer.json().get("model", record.model))
        return Probe(
            True,
            f"deployment {record.model} of model {model} (api-version {AZURE_API_VERSION})",
            (str(record.model),),
            health=health,
        )
    answer = client.get(record.url.rstrip("/") + "/models", headers=upstream.headers())
    if answer.status_code in (401, 403):
        return Probe(False, f"the key was refused (HTTP {answer.status_code})", health=health)
    if answer.status_code != 200:
        return Probe(False, f"GET /models answered HTTP {answer.status_code}", health=health)
    data = answer.json().get("data") or []
    models = tuple(str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id"))
    context = _context_length(client, upstream, data)
    if record.model and models and record.model not in models:
        listed = ", ".join(models)
        return Probe(
            False,
            f"it does not serve model '{record.model}' (it serves {listed})",
            models,
            context,
            health,
        )
    found = f"serves {', '.join(models) or 'no listed model'}"
    if context:
        found += f", context {context} tokens"
    return Probe(True, found, models, context, health)


def _context_length(client: httpx.Client, upstream: Upstream, data: list[Any]) -> int | None:
    for model in data:  # vLLM lists max_model_len with each model
        if isinstance(model, dict) and isinstance(model.get("max_model_len"), int):
            return int(model["max_model_len"])
    if upstream.record.flavor == "llama-server":
        answer = client.get(upstream.root + "/props")
        if answer.status_code == 200:
            settings = answer.json().get("default_generation_settings") or {}
            n_ctx = settings.get("n_ctx")
            return int(n_ctx) if isinstance(n_ctx, int) else None
    return None


def add_upstream(
    store: Store, record: UpstreamRecord, *, check: bool = True
) -> tuple[UpstreamRecord, Probe | None]:
    """Register ``record``; with ``check`` the upstream must answer its probe first.

    Without ``--model`` an OpenAI-dialect upstream serving one model is recorded with it.
    """
    _check(record)
    if store.get_upstream(record.name) is not None:
        raise ControlError(
            f"an upstream called '{record.name}' already exists; remove it first "
            f"(cerulean upstreams remove {record.name}) or pick another name",
            reason="conflict",
            code="Conflict",
        )
    found = None
    if check:
        found = probe(record)
        if not found.ok:
            raise ControlError(
                f"upstream {record.name} at {record.url} did not answer as a {record.flavor} "
                f"server: {found.detail}. Fix the URL, --flavor or credential, or add it with "
                "--no-probe to register it anyway.",
                reason="invalid",
                code="UpstreamUnreachable",
            )
        if record.model is None and len(found.models) == 1:
            record = replace(record, model=found.models[0])
        record = replace(record, profile=found.as_json())
    store.put_upstream(record)
    return record, found


def get_upstream(store: Store, name: str) -> UpstreamRecord:
    record = store.get_upstream(name)
    if record is None:
        raise ControlError(
            f"no upstream called '{name}' (cerulean upstreams list shows them)",
            reason="not_found",
            code="UpstreamNotFound",
        )
    return record


def remove_upstream(store: Store, name: str) -> None:
    """Remove an upstream; refused while a deployment uses it."""
    get_upstream(store, name)
    users = sorted(d.name for d in store.list_deployments() if name in d.upstreams)
    if users:
        raise ControlError(
            f"'{name}' serves deployment(s) {', '.join(users)}; change them first "
            f"(cerulean deployments update NAME --upstream OTHER) or delete them",
            reason="conflict",
            code="Conflict",
        )
    store.delete_upstream(name)


def describe(record: UpstreamRecord) -> dict[str, Any]:
    """The upstream as ``show`` prints it: its credential masked, never shown."""
    credential = "none"
    if record.api_key_env:
        value = os.environ.get(record.api_key_env)
        credential = f"env {record.api_key_env}" + (
            f" ({mask_key(value)})" if value else " (unset here)"
        )
    elif record.api_key_file:
        path = Path(record.api_key_file)
        credential = f"file {path}" + ("" if path.is_file() else " (missing here)")
    profile = json.loads(record.profile) if record.profile else None
    return {
        "name": record.name,
        "url": record.url,
        "flavor": record.flavor,
        "model": record.model,
        "credential": credential,
        "max_concurrency": record.max_concurrency,
        "weight": record.weight,
        "created_at": record.created_at.isoformat(),
        "probe": profile,
    }
