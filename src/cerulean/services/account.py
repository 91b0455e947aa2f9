"""The account resource's own properties, as ARM shows them (``GET``/``PATCH`` the account).

Cerulean keeps one: ``disableLocalAuth``. Set, account keys stop working on the data plane
(Azure's 403 ``AuthenticationTypeDisabled``) and only Entra ID tokens are accepted. It lives in
the store (``account_properties``) so the CLI and every server sharing it agree; servers read it
with the key digests (:class:`~cerulean.services.keys.KeyRing`), never per request.
"""

from __future__ import annotations

import json
from typing import Any

from cerulean.settings import Settings
from cerulean.store.base import Store

__all__ = ["DISABLE_LOCAL_AUTH", "arm_account", "local_auth_disabled", "set_local_auth"]

DISABLE_LOCAL_AUTH = "disableLocalAuth"


def local_auth_disabled(properties: dict[str, str]) -> bool:
    """Whether the stored properties disable key authentication."""
    try:
        return json.loads(properties.get(DISABLE_LOCAL_AUTH, "false")) is True
    except ValueError:
        return False


def set_local_auth(store: Store, *, disabled: bool) -> None:
    """Disable (or enable again) key authentication on the account."""
    store.set_account_property(DISABLE_LOCAL_AUTH, json.dumps(disabled))


def arm_account(settings: Settings, store: Store, account_id: str, endpoint: str) -> dict[str, Any]:
    """The account resource (``Microsoft.CognitiveServices/accounts``) in ARM's shape."""
    name = settings.account_name
    return {
        "id": account_id,
        "name": name,
        "type": "Microsoft.CognitiveServices/accounts",
        "kind": "OpenAI",
        "location": settings.region,
        "sku": {"name": "S0"},
        "properties": {
            "provisioningState": "Succeeded",
            "endpoint": endpoint,
            "customSubDomainName": name,
            "publicNetworkAccess": "Enabled",
            "disableLocalAuth": local_auth_disabled(store.account_properties()),
        },
    }
