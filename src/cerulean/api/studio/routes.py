"""The Studio's routes: thin handlers over the services (see the package docstring)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from cerulean.api.deps import StateDep, chat_call
from cerulean.api.respond import respond
from cerulean.api.studio import batches as batch_pages
from cerulean.api.studio import filters as filter_pages
from cerulean.api.studio import pages
from cerulean.api.studio import roles as role_pages
from cerulean.api.studio.pages import (
    PREFIX,
    SECURITY_HEADERS,
    SignInRequired,
    checked_form,
    checked_json,
    current_session,
    page,
    redirect,
    require_session,
    sessions,
)
from cerulean.errors import APIError, ControlError, StudioError
from cerulean.protocol.apiversions import parse_api_version
from cerulean.protocol.chat import parse_chat_request
from cerulean.quota.base import Limits
from cerulean.services import accounting
from cerulean.services import chat as chat_service
from cerulean.services import deployments as deployment_service
from cerulean.services.entra import looks_like_jwt
from cerulean.services.keys import KEY_NAMES, mask_key, readable_keys, regenerate_key
from cerulean.services.snippets import (
    API_VERSION,
    PlaygroundSettings,
    curl_snippet,
    python_snippet,
    request_body,
)
from cerulean.services.studio import COOKIE_NAME
from cerulean.services.upstreams import describe
from cerulean.services.usage_view import RANGES, GroupBy, StoreUsage, build_charts, colors
from cerulean.state import AppState

__all__ = ["PREFIX", "install", "router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)  # pages, not API operations
_STATIC = {"studio.css": "text/css", "studio.js": "text/javascript"}
_FAILED_SIGN_IN_DELAY_S = 0.5
STUDIO_CALLER = "studio"  # the caller of the playground's requests in usage accounting


def install(app: FastAPI) -> None:
    """The Studio's exception handlers: pages redirect to sign-in or show HTML refusals;
    ``/studio/api/`` answers in the error envelope."""

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return redirect("/sign-in" + ("?expired=1" if exc.reason == "expired" else ""))

    async def studio_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StudioError)
        if request.url.path.startswith(PREFIX + "/api/"):
            return pages.json_error(exc)
        state: AppState = request.app.state.cerulean
        session = current_session(request, state) if state.studio is not None else None
        return pages.studio_error_page(exc, session)

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(StudioError, studio_error)


def endpoint(request: Request, state: AppState) -> str:
    """The data-plane endpoint, as the banner prints it (never taken from the Host header)."""
    host = state.settings.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    port = request.url.port or state.settings.port
    return f"{request.url.scheme}://{host}:{port}/"


# -- sign-in ------------------------------------------------------------------------------


@router.get("")
async def home(request: Request, state: StateDep) -> Response:
    signed_in = current_session(request, state) is not None
    return redirect("/playground" if signed_in else "/sign-in")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:
        raise StudioError(404, "NotFound", "No such file.")
    return FileResponse(pages.ASSETS / name, media_type=_STATIC[name], headers=SECURITY_HEADERS)


@router.get("/sign-in")
async def sign_in_page(request: Request, state: StateDep) -> Response:
    secret = sessions(state).secret
    return page(
        "sign_in.html",
        session=None,
        expired=request.query_params.get("expired") == "1",
        source=secret.source,
        token_path=str(secret.path) if secret.path else "",
    )


@router.post("/sign-in")
async def sign_in(request: Request, state: StateDep) -> Response:
    pages.check_origin(request)
    studio = sessions(state)
    fields = await pages.form_fields(request)
    given = fields.get("token", "")
    if not studio.check_token(given) and not await _entra_operator(state, given):
        await asyncio.sleep(_FAILED_SIGN_IN_DELAY_S)  # guessing costs time
        secret = studio.secret
        return page(
            "sign_in.html",
            session=None,
            status=401,
            error="That token is not this server's sign-in token.",
            source=secret.source,
            token_path=str(secret.path) if secret.path else "",
        )
    _, cookie = studio.open()
    response = redirect("/playground")
    # A browser-session cookie (no Max-Age): the server's expiry is what ends a sign-in.
    response.set_cookie(
        COOKIE_NAME,
        cookie,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def _entra_operator(state: AppState, token: str) -> bool:
    """Whether ``token`` is an Entra ID token for the management API whose principal may
    regenerate the account's keys (Cognitive Services Contributor): the Studio does what that
    role does (docs/studio.md)."""
    entra = state.entra
    if entra is None or not looks_like_jwt(token.strip()):
        return False
    scope = (
        "/subscriptions/-/resourceGroups/-/providers/Microsoft.CognitiveServices/accounts/"
        f"{state.settings.account_name}"
    )
    try:
        await entra.management(token.strip(), "POST", "/regenerateKey", scope)
    except APIError:
        return False
    return True


@router.post("/sign-out")
async def sign_out(request: Request, state: StateDep) -> Response:
    session, _ = await checked_form(request, state)
    sessions(state).close(session)
    response = redirect("/sign-in")
    response.delete_cookie(COOKIE_NAME, path=PREFIX, httponly=True, samesite="strict")
    return response


# -- playground ---------------------------------------------------------------------------


async def _chat_deployments(state: AppState) -> list[str]:
    records = await run_in_threadpool(state.store.list_deployments)
    models = {m.name: m for m in await run_in_threadpool(state.store.list_models)}
    names = []
    for record in records:
        model = models.get(record.model)
        if record.upstreams or (model is not None and "chat_completion" in model.capabilities):
            names.append(record.name)
    return names


def _settings_from(fields: dict[str, Any], messages: list[dict[str, str]]) -> PlaygroundSettings:
    """The playground's settings from a form or the script's JSON (refused when malformed)."""

    def number(name: str, kind: type[float] | type[int]) -> Any:
        value = fields.get(name)
        if value in (None, ""):
            return None
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise StudioError(400, "InvalidValue", f"{name} must be a number.") from None

    stop = fields.get("stop") or []
    if isinstance(stop, str):
        stop = [s for s in stop.splitlines() if s]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise StudioError(400, "InvalidValue", "stop must be a list of strings.")
    json_mode = fields.get("json_mode") in (True, "on", "true", "1")
    return PlaygroundSettings(
        deployment=str(fields.get("deployment") or ""),
        messages=messages,
        temperature=number("temperature", float),
        max_tokens=number("max_tokens", int),
        stop=stop[:4],
        json_mode=json_mode,
        stream=fields.get("stream", True) is not False,
    )


def _messages(system: str, history: Any) -> list[dict[str, str]]:
    if not isinstance(history, list):
        raise StudioError(400, "InvalidValue", "messages must be a list.")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for item in history:
        if (
            not isinstance(item, dict)
            or item.get("role") not in ("user", "assistant")
            or not isinstance(item.get("content"), str)
        ):
            raise StudioError(400, "InvalidValue", "each message needs a role and content.")
        messages.append({"role": item["role"], "content": item["content"]})
    return messages


async def _start_chat(request: Request, state: AppState, settings: PlaygroundSettings) -> Any:
    version = parse_api_version(API_VERSION)
    assert version is not None
    deployment = await state.pool.resolve(settings.deployment, "chat_completion")
    body = parse_chat_request(json.dumps(request_body(settings)).encode(), version)
    return await chat_service.create_chat_completion(
        await chat_call(request, version, deployment), body
    )


@router.get("/playground")
async def playground(request: Request, state: StateDep) -> Response:
    session = require_session(request, state)
    names = await _chat_deployments(state)
    return page(
        "playground.html",
        session=session,
        active="playground",
        deployments=names,
        form={"deployment": names[0] if names else "", "system": "You are a helpful assistant."},
        history=[],
        endpoint=endpoint(request, state),
    )


@router.post("/playground")
async def playground_form(request: Request, state: StateDep) -> Response:
    """The playground without JavaScript: send (an answer in one piece), view code, reset."""
    session, fields = await checked_form(request, state)
    try:
        history = json.loads(fields.get("history") or "[]")
    except ValueError:
        history = []
    action = fields.get("action", "send")
    if action == "reset":
        history = []
    message = fields.get("message", "").strip()
    if action == "send" and message:
        history = [*history, {"role": "user", "content": message}]
    settings = _settings_from(
        {**fields, "stream": False}, _messages(fields.get("system", ""), history)
    )
    result: dict[str, Any] = {}
    error = ""
    if action == "send" and message:
        started = time.perf_counter()
        accounting.current().caller = STUDIO_CALLER
        try:
            answer = await _start_chat(request, state, settings)
            completion = await answer.collect()
        except APIError as exc:
            error = exc.message or json.dumps(exc.body())
        else:
            content = completion["choices"][0]["message"].get("content") or ""
            history = [*history, {"role": "assistant", "content": content}]
            result = {
                "usage": completion.get("usage") or {},
                "latency_ms": round((time.perf_counter() - started) * 1000),
            }
    names = await _chat_deployments(state)
    code = {}
    if action == "code":
        code = {
            "python": python_snippet(settings, endpoint(request, state)),
            "curl": curl_snippet(settings, endpoint(request, state)),
        }
    return page(
        "playground.html",
        session=session,
        active="playground",
        deployments=names,
        form=fields,
        history=history,
        history_json=json.dumps(history),
        result=result,
        error=error,
        code=code,
        endpoint=endpoint(request, state),
        status=400 if error else 200,
    )


@router.post("/api/chat")
async def api_chat(request: Request, state: StateDep) -> Response:
    """The playground's streaming answer: Azure's event stream, as the data plane sends it."""
    body = await checked_json(request, state)
    settings = _settings_from(
        {**body, "stream": True}, _messages(str(body.get("system") or ""), body.get("messages"))
    )
    accounting.current().caller = STUDIO_CALLER  # its usage rows' caller
    answer = await _start_chat(request, state, settings)
    response = await respond(request, answer)
    response.headers.update({"cache-control": "no-store", "x-content-type-options": "nosniff"})
    return response


@router.post("/api/code")
async def api_code(request: Request, state: StateDep) -> dict[str, str]:
    """ "View code" for the playground's current settings."""
    body = await checked_json(request, state)
    settings = _settings_from(
        {**body, "stream": True}, _messages(str(body.get("system") or ""), body.get("messages"))
    )
    where = endpoint(request, state)
    return {"python": python_snippet(settings, where), "curl": curl_snippet(settings, where)}


# -- deployments --------------------------------------------------------------------------


async def _deployment_rows(state: AppState) -> list[dict[str, Any]]:
    rows = []
    now = state.clock()
    for record in await run_in_threadpool(state.store.list_deployments):
        limits = Limits.for_capacity(record.capacity)
        used = await state.limiter.current(record.name, limits, now)
        rows.append(
            {
                "record": record,
                "limits": limits,
                "rpm": record.capacity * 6,
                "used_requests": used[0] if used else None,
                "used_tokens": used[1] if used else None,
                "loading": record.model in state.pool.loading,
            }
        )
    return rows


async def _deployments_page(
    request: Request,
    state: AppState,
    session: Any,
    *,
    error: str = "",
    notice: str = "",
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    models = await run_in_threadpool(state.store.list_models)
    return page(
        "deployments.html",
        session=session,
        active="deployments",
        rows=await _deployment_rows(state),
        models=models,
        default_capacity=deployment_service.DEFAULT_CAPACITY,
        error=error,
        notice=notice,
        form=form or {},
        status=status,
    )


@router.get("/deployments")
async def deployments(request: Request, state: StateDep) -> Response:
    session = require_session(request, state)
    return await _deployments_page(request, state, session)


def _capacity(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise ControlError(
            "capacity must be a whole number (thousands of tokens per minute)",
            reason="invalid",
            code="InvalidCapacity",
        ) from None


@router.post("/deployments")
async def create_deployment(request: Request, state: StateDep) -> Response:
    session, fields = await checked_form(request, state)
    name = fields.get("name", "").strip()
    try:
        await run_in_threadpool(
            deployment_service.create_deployment,
            state.store,
            name,
            fields.get("model") or None,
            capacity=_capacity(fields.get("capacity")),
        )
    except ControlError as exc:
        return await _deployments_page(
            request, state, session, error=exc.message, form=fields, status=400
        )
    await state.pool.reconcile()
    return await _deployments_page(request, state, session, notice=f"Created {name}.")


@router.post("/deployments/{name}/capacity")
async def change_capacity(request: Request, state: StateDep, name: str) -> Response:
    session, fields = await checked_form(request, state)
    try:
        capacity = _capacity(fields.get("capacity"))
        await run_in_threadpool(deployment_service.update_capacity, state.store, name, capacity)
    except ControlError as exc:
        return await _deployments_page(request, state, session, error=exc.message, status=400)
    return await _deployments_page(
        request, state, session, notice=f"{name}: capacity {capacity} ({capacity}K TPM)."
    )


@router.post("/deployments/{name}/delete")
async def delete_deployment(request: Request, state: StateDep, name: str) -> Response:
    session, fields = await checked_form(request, state)
    if fields.get("confirm") != "yes":
        return page(
            "confirm.html",
            session=session,
            active="deployments",
            title=f"Delete {name}?",
            message=f"Requests for deployment {name} will get 404 DeploymentNotFound.",
            action=f"{PREFIX}/deployments/{name}/delete",
            button=f"Delete {name}",
            back=f"{PREFIX}/deployments",
        )
    try:
        await run_in_threadpool(deployment_service.delete_deployment, state.store, name)
    except ControlError as exc:
        return await _deployments_page(request, state, session, error=exc.message, status=404)
    await state.limiter.forget(name)
    await state.pool.reconcile()
    return await _deployments_page(request, state, session, notice=f"Deleted {name}.")


# -- keys ---------------------------------------------------------------------------------


async def _keys_page(
    request: Request,
    state: AppState,
    session: Any,
    *,
    shown: dict[str, str] | None = None,
    notice: str = "",
    error: str = "",
    status: int = 200,
) -> Response:
    known = await run_in_threadpool(readable_keys, state.store, state.settings)
    keys = [
        {
            "name": name,
            "masked": mask_key(known[name]) if name in known else None,
            "value": (shown or {}).get(name),
            "pinned": getattr(state.settings, name) is not None,
        }
        for name in KEY_NAMES
    ]
    return page(
        "keys.html",
        session=session,
        active="keys",
        keys=keys,
        endpoint=endpoint(request, state),
        api_version=API_VERSION,
        notice=notice,
        error=error,
        status=status,
    )


@router.get("/keys")
async def keys(request: Request, state: StateDep) -> Response:
    return await _keys_page(request, state, require_session(request, state))


def _key_name(name: str) -> str:
    if name not in KEY_NAMES:
        raise StudioError(404, "NotFound", f"There is no key called {name}.")
    return name


@router.post("/keys/{name}/show")
async def show_key(request: Request, state: StateDep, name: str) -> Response:
    session, _ = await checked_form(request, state)
    known = await run_in_threadpool(readable_keys, state.store, state.settings)
    name = _key_name(name)
    if name not in known:
        return await _keys_page(
            request, state, session, error=f"{name} is stored only as a hash.", status=404
        )
    return await _keys_page(request, state, session, shown={name: known[name]})


@router.post("/keys/{name}/regenerate")
async def regenerate(request: Request, state: StateDep, name: str) -> Response:
    session, fields = await checked_form(request, state)
    name = _key_name(name)
    if fields.get("confirm") != "yes":
        other = "key2" if name == "key1" else "key1"
        return page(
            "confirm.html",
            session=session,
            active="keys",
            title=f"Regenerate {name}?",
            message=f"The current {name} stops working at once. Move your clients to {other} "
            "first.",
            action=f"{PREFIX}/keys/{name}/regenerate",
            button=f"Regenerate {name}",
            back=f"{PREFIX}/keys",
        )
    try:
        key = await run_in_threadpool(regenerate_key, state.store, state.settings, name)
    except ControlError as exc:
        return await _keys_page(request, state, session, error=exc.message, status=409)
    await state.keyring.reload()  # the old key stops working now
    return await _keys_page(
        request,
        state,
        session,
        shown={name: key},
        notice=f"{name} was regenerated; the old value no longer works.",
    )


# -- usage and upstreams ------------------------------------------------------------------


@router.get("/usage")
async def usage(request: Request, state: StateDep) -> Response:
    session = require_session(request, state)
    range_name = request.query_params.get("range", "hour")
    range_name = range_name if range_name in RANGES else "hour"
    by: GroupBy = "key" if request.query_params.get("by") == "key" else "deployment"
    source = StoreUsage(
        state.store,
        recording=state.usage is not None,
        retention_days=state.settings.usage_retention_days,
    )
    charts = await run_in_threadpool(build_charts, source, range_name, by)
    legend = colors(charts[0].series) if charts else {}
    return page(
        "usage.html",
        session=session,
        active="usage",
        charts=charts,
        legend=legend,
        ranges=RANGES,
        range_name=range_name,
        by=by,
        description=source.description,
    )


@router.get("/upstreams")
async def upstreams(request: Request, state: StateDep) -> Response:
    session = require_session(request, state)
    records = await run_in_threadpool(state.store.list_upstreams)
    return page(
        "upstreams.html",
        session=session,
        active="upstreams",
        upstreams=[describe(r) for r in records],
    )


# -- batches, content filters, role assignments (their own modules) ----------------------

router.include_router(batch_pages.router)
router.include_router(filter_pages.router)
router.include_router(role_pages.router)
