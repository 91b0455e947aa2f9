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
