"""Persistent state: account keys (hashed), deployments, the model catalog, usage."""

from __future__ import annotations

from cerulean.store.base import DeploymentRecord, Store
from cerulean.store.sql import SqlStore

__all__ = ["DeploymentRecord", "SqlStore", "Store"]
