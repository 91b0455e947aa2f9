"""Entra ID sign-in for both planes: a validated token, then the principal's role.

:class:`EntraAuth` answers one question per request: may this bearer token do this? On the data
plane the answers are Azure's (wire reference ``azure-beyond-chat.md`` §3): a bad, expired,
wrong-audience or untrusted token is API Management's unwrapped 401
(:class:`~cerulean.errors.MissingCredentials`); a valid token whose principal lacks the
operation's data action is the 401 :class:`~cerulean.errors.PermissionDenied`. On the
management API they are ARM's (``InvalidAuthenticationToken``, ``ExpiredAuthenticationToken``,
``InvalidAuthenticationTokenAudience``, ``InvalidAuthenticationTokenTenant``; 403
``AuthorizationFailed``), a decision recorded in docs/entra-id.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from cerulean.errors import APIError, ArmError, MissingCredentials, PermissionDenied
from cerulean.services.entra import (
    JwksKeys,
    KeySource,
    Principal,
    StaticKeys,
    TokenRejected,
    TokenValidator,
    audience_variants,
)
from cerulean.services.rbac import RoleAssignments, arm_action, data_action
from cerulean.settings import Settings
from cerulean.store.base import Store

__all__ = ["EntraAuth", "build_entra"]

logger = logging.getLogger(__name__)

LEGACY_MANAGEMENT_AUDIENCE = "https://management.core.windows.net"


@dataclass
class EntraAuth:
    """Token validation and role checks (see the module)."""

    validator: TokenValidator
    roles: RoleAssignments
    data_audiences: tuple[str, ...]
    management_audiences: tuple[str, ...]

    async def data_plane(self, token: str, method: str, path: str) -> APIError | str:
        """The principal (``oid``) when ``token`` may call ``method path``; else the error to
        answer."""
        try:
            principal = await self.validator.validate(token, self.data_audiences)
        except TokenRejected as exc:
            logger.info("bearer token refused on the data plane: %s", exc.detail)
            return MissingCredentials()
        action, operation = data_action(method, path)
        if await self.roles.permits(principal.oid, action, data=True):
            return principal.oid
        logger.info("principal %s lacks %s", principal.oid, action)
        return PermissionDenied(principal.oid, action, operation)

    async def management(self, token: str, method: str, tail: str, scope: str) -> Principal:
        """The principal of ``token`` if it may do ``method`` on ``scope + tail``; else raises
        ARM's error."""
        try:
            principal = await self.validator.validate(token, self.management_audiences)
        except TokenRejected as exc:
            logger.info("bearer token refused on the management API: %s", exc.detail)
            raise self._arm_rejection(exc) from None
        action = arm_action(method, tail)
        if not await self.roles.permits(principal.oid, action, data=False):
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{principal.oid}' with object id '{principal.oid}' does not have "
                f"authorization to perform action '{action}' over scope '{scope + tail}' or the "
                "scope is invalid. If access was recently granted, please refresh your "
                "credentials.",
            )
        return principal

    def _arm_rejection(self, exc: TokenRejected) -> ArmError:
        if exc.reason == "expired":
            exp = exc.claims.get("exp")
            when = _utc(exp) if isinstance(exp, int | float) else "unknown"
            now = datetime.now(timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
            return ArmError(
                401,
                "ExpiredAuthenticationToken",
                f"The access token expiry UTC time '{when}' is earlier than current UTC time "
                f"'{now}'.",
            )
        if exc.reason == "audience":
            aud = exc.claims.get("aud")
            allowed = ",".join(f"'{a}'" for a in self.management_audiences)
            return ArmError(
                401,
                "InvalidAuthenticationTokenAudience",
                f"The access token has been obtained for wrong audience or resource '{aud}'. "
                f"It should exactly match with one of the allowed audiences {allowed}.",
            )
        if exc.reason == "issuer":
            return ArmError(
                401,
                "InvalidAuthenticationTokenTenant",
                f"The access token is from the wrong issuer '{exc.claims.get('iss')}'. It must "
                "match one of the issuers this server trusts.",
            )
        return ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.")

    async def aclose(self) -> None:
        await self.validator.aclose()


def _utc(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
    except (OverflowError, ValueError, OSError):  # a signed but absurd exp
        return str(timestamp)


def build_entra(settings: Settings, store: Store) -> EntraAuth | None:
    """The Entra sign-in of ``settings``; None when no issuer is trusted (keys only)."""
    issuers: dict[str, KeySource] = {}
    if settings.entra_jwks_url is not None:
        keys = JwksKeys(
            settings.entra_jwks_url,
            ttl=settings.entra_jwks_cache_seconds,
            refresh_interval=settings.entra_jwks_refresh_interval,
        )
        for issuer in settings.entra_issuers:
            issuers[issuer] = keys
    if settings.trust_local_issuer:
        from cerulean.services.local_issuer import LOCAL_ISSUER, local_keys

        issuers[LOCAL_ISSUER] = StaticKeys(local_keys(settings))
    if not issuers:
        return None
    management = audience_variants(settings.entra_management_audience)
    if settings.entra_management_audience.rstrip("/") == "https://management.azure.com":
        management += audience_variants(LEGACY_MANAGEMENT_AUDIENCE)
    return EntraAuth(
        validator=TokenValidator(issuers, leeway=settings.entra_clock_skew),
        roles=RoleAssignments(store, ttl=settings.key_cache_seconds),
        data_audiences=audience_variants(settings.entra_audience),
        management_audiences=management,
    )
