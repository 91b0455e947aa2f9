"""Deployments and keys in Azure Resource Manager's shapes (wire reference §9)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from cerulean.errors import ArmError, ControlError
from cerulean.protocol.capabilities import CHAT_CAPABILITIES, NAMES, parse_capabilities
from cerulean.quota.base import Limits
from cerulean.services.filtering.policy import DEFAULT_POLICY
from cerulean.store.base import DeploymentRecord, ModelRecord, UsageRecord

__all__ = [
    "ARM_DEPLOYMENT_TYPE",
    "UPSTREAM_FORMAT",
    "MIN_API_VERSION",
    "arm_deployment",
    "arm_error",
    "arm_usages",
    "check_arm_api_version",
    "usage_filter",
]

ARM_DEPLOYMENT_TYPE = "Microsoft.CognitiveServices/accounts/deployments"
# properties.model.format of a deployment served by upstreams (Azure's own formats name model
# publishers, "OpenAI"; this one names Cerulean's remote engines; docs/scaling.md).
UPSTREAM_FORMAT = "Cerulean.Upstream"
MIN_API_VERSION = "2023-05-01"
_STATUS = {"invalid": 400, "not_found": 404, "conflict": 409}


def check_arm_api_version(value: str | None) -> None:
    """ARM's 400s for a missing ``api-version`` or one older than :data:`MIN_API_VERSION`."""
    if not value:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    date = value.removesuffix("-preview")
    try:
        datetime.strptime(date, "%Y-%m-%d")
        valid = date >= MIN_API_VERSION
    except ValueError:
        valid = False
    if not valid:
        raise ArmError(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{value}' is invalid. The supported versions are "
            f"'{MIN_API_VERSION}' and later (e.g. '2024-10-01').",
        )


def arm_error(exc: ControlError) -> ArmError:
    """A refused management operation as ARM's error (400, 404 or 409)."""
    return ArmError(_STATUS[exc.reason], exc.code, exc.message)


def _timestamp(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _period(seconds: float) -> float | int:
    return int(seconds) if float(seconds).is_integer() else seconds


def arm_deployment(
    record: DeploymentRecord, model: ModelRecord | None, account_id: str
) -> dict[str, Any]:
    """One deployment resource: ``account_id`` is the account's ARM id (``/subscriptions/…``)."""
    limits = Limits.for_capacity(record.capacity)
    known = parse_capabilities(model.capabilities) if model else frozenset()
    if record.upstreams:  # served by remote engines: chat and completions
        known = CHAT_CAPABILITIES
    capabilities = {NAMES[c].arm: "true" for c in sorted(known)}
    created = _timestamp(record.created_at)
    return {
        "id": f"{account_id}/deployments/{record.name}",
        "type": ARM_DEPLOYMENT_TYPE,
        "name": record.name,
        "sku": {"name": record.sku, "capacity": record.capacity},
        "properties": {
            "model": {
                "format": UPSTREAM_FORMAT if record.upstreams else "OpenAI",
                "name": record.model,
                "version": record.version,
            },
            "versionUpgradeOption": "NoAutoUpgrade",
            "capabilities": capabilities,
            **({"upstreams": list(record.upstreams)} if record.upstreams else {}),
            "raiPolicyName": record.rai_policy or DEFAULT_POLICY,
            "provisioningState": "Succeeded",
            "currentCapacity": record.capacity,
            "rateLimits": [
                {
                    "key": "request",
                    "renewalPeriod": _period(limits.request_window),
                    "count": limits.requests,
                },
                {
                    "key": "token",
                    "renewalPeriod": _period(limits.token_window),
                    "count": limits.tokens,
                },
            ],
        },
        "systemData": {
            "createdBy": "cerulean",
            "createdByType": "User",
            "createdAt": created,
            "lastModifiedBy": "cerulean",
            "lastModifiedByType": "User",
            "lastModifiedAt": created,
        },
    }


def arm_usages(
    deployments: list[DeploymentRecord], rows: list[UsageRecord], now: datetime
) -> list[dict[str, Any]]:
    """The account's ``usages`` (Azure's ``Usage`` model): for each deployment its tokens and
    requests in the current minute against its per-minute quota (docs/telemetry.md).

    ``rows`` are the usage rows of the current minute; ``nextResetTime`` is the next minute's
    start, when the period's count starts again.
    """
    tokens: dict[str, int] = {}
    requests: dict[str, int] = {}
    for row in rows:
        tokens[row.deployment] = tokens.get(row.deployment, 0) + row.total_tokens
        requests[row.deployment] = requests.get(row.deployment, 0) + row.requests
    reset = (now.replace(second=0, microsecond=0) + timedelta(minutes=1)).isoformat()
    out: list[dict[str, Any]] = []
    for record in deployments:
        limits = Limits.for_capacity(record.capacity)
        per_minute = limits.requests * round(60 / limits.request_window)
        for kind, label, used, limit in (
            ("Tokens", "Tokens Per Minute", tokens.get(record.name, 0), limits.tokens),
            ("Requests", "Requests Per Minute", requests.get(record.name, 0), per_minute),
        ):
            out.append(
                {
                    "name": {
                        "value": f"OpenAI.{record.sku}.{record.name}.{kind}",
                        "localizedValue": f"{label} - {record.name}",
                    },
                    "unit": "Count",
                    "quotaPeriod": "PT1M",
                    "currentValue": float(used),
                    "limit": float(limit),
                    "nextResetTime": reset,
                    "status": "Blocked" if used >= limit else "Included",
                }
            )
    return out


def usage_filter(expression: str | None) -> frozenset[str] | None:
    """The names an OData ``$filter`` of ``name.value eq 'A' or name.value eq 'B'`` asks for
    (None: every usage); anything else is ARM's 400."""
    if not expression or not expression.strip():
        return None
    names: set[str] = set()
    for clause in re.split(r"\s+or\s+", expression.strip(), flags=re.IGNORECASE):
        match = re.fullmatch(r"name\.value\s+eq\s+'([^']*)'", clause.strip(), flags=re.IGNORECASE)
        if match is None:
            raise ArmError(
                400,
                "InvalidFilter",
                f"The $filter '{expression}' is not supported: use name.value eq '<name>' "
                "(joined by 'or').",
            )
        names.add(match.group(1))
    return frozenset(names)
