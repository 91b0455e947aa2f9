"""Management-plane (Azure Resource Manager) request bodies, named after the
``Microsoft.CognitiveServices`` resource-manager spec (wire reference §9)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cerulean.errors import ArmError

__all__ = [
    "Account",
    "AccountProperties",
    "Deployment",
    "DeploymentModel",
    "DeploymentProperties",
    "DeploymentScaleSettings",
    "RaiBlocklist",
    "RaiBlocklistItem",
    "RaiBlocklistItemBulk",
    "RaiPolicy",
    "RegenerateKeyParameters",
    "Sku",
    "parse_arm_body",
]


class _ArmModel(BaseModel):
    # Lenient like ARM: capacity may come as "120"; unknown properties are kept and ignored.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Sku(_ArmModel):
    name: str = "Standard"
    capacity: int | None = None


class DeploymentModel(_ArmModel):
    format: str | None = None
    name: str
    version: str | None = None


class DeploymentScaleSettings(_ArmModel):
    """The 2023-05-01 style of capacity, before ``sku``."""

    scale_type: str | None = Field(None, alias="scaleType")
    capacity: int | None = None


class DeploymentProperties(_ArmModel):
    model: DeploymentModel
    scale_settings: DeploymentScaleSettings | None = Field(None, alias="scaleSettings")
    # Cerulean's: the upstreams serving a deployment of format "Cerulean.Upstream".
    upstreams: list[str] | None = None
    rai_policy_name: str | None = Field(None, alias="raiPolicyName")


class Deployment(_ArmModel):
    sku: Sku | None = None
    properties: DeploymentProperties

    @property
    def capacity(self) -> int | None:
        """``sku.capacity``, else the legacy ``properties.scaleSettings.capacity``."""
        if self.sku is not None and self.sku.capacity is not None:
            return self.sku.capacity
        scale = self.properties.scale_settings
        return scale.capacity if scale is not None else None


class AccountProperties(_ArmModel):
    disable_local_auth: bool | None = Field(None, alias="disableLocalAuth")


class Account(_ArmModel):
    """The account resource (``Microsoft.CognitiveServices/accounts``) of a PATCH or PUT."""

    properties: AccountProperties | None = None


class RegenerateKeyParameters(_ArmModel):
    key_name: Literal["Key1", "Key2", "key1", "key2"] = Field(alias="keyName")


# -- content filtering (azure-mgmt-cognitiveservices: RaiPolicy, RaiBlocklist, RaiBlocklistItem) --


class RaiPolicyContentFilter(_ArmModel):
    name: str
    enabled: bool = True
    severity_threshold: Literal["Low", "Medium", "High"] | None = Field(
        None, alias="severityThreshold"
    )
    blocking: bool = True
    source: Literal["Prompt", "Completion"]


class CustomBlocklistConfig(_ArmModel):
    blocklist_name: str = Field(alias="blocklistName")
    blocking: bool = True
    source: Literal["Prompt", "Completion"] | None = None


class RaiPolicyProperties(_ArmModel):
    mode: Literal["Default", "Deferred", "Blocking", "Asynchronous_filter"] | None = None
    base_policy_name: str | None = Field(None, alias="basePolicyName")
    content_filters: list[RaiPolicyContentFilter] = Field(
        default_factory=list, alias="contentFilters"
    )
    custom_blocklists: list[CustomBlocklistConfig] = Field(
        default_factory=list, alias="customBlocklists"
    )
    # The older documents' spelling: one list per side.
    prompt_blocklists: list[CustomBlocklistConfig] = Field(
        default_factory=list, alias="promptBlocklists"
    )
    completion_blocklists: list[CustomBlocklistConfig] = Field(
        default_factory=list, alias="completionBlocklists"
    )


class RaiPolicy(_ArmModel):
    properties: RaiPolicyProperties = Field(
        default_factory=lambda: RaiPolicyProperties.model_validate({})
    )


class RaiBlocklistProperties(_ArmModel):
    description: str | None = None


class RaiBlocklist(_ArmModel):
    properties: RaiBlocklistProperties = Field(
        default_factory=lambda: RaiBlocklistProperties.model_validate({})
    )


class RaiBlocklistItemProperties(_ArmModel):
    pattern: str
    is_regex: bool = Field(False, alias="isRegex")


class RaiBlocklistItem(_ArmModel):
    properties: RaiBlocklistItemProperties


class RaiBlocklistItemBulkEntry(_ArmModel):
    name: str
    properties: RaiBlocklistItemProperties


class RaiBlocklistItemBulk(_ArmModel):
    """``addRaiBlocklistItems``: a JSON array of named items (wrapped here as ``items``)."""

    items: list[RaiBlocklistItemBulkEntry]


def parse_arm_body(raw: bytes, model: type[_ArmModel]) -> Any:
    """``raw`` as ``model``; ARM's 400 ``InvalidRequestContent`` naming the first problem."""
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise ArmError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: {exc}.",
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise ArmError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid: '{where}': {first['msg']}.",
        ) from None
