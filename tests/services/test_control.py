"""The control-plane services: deployments, the model catalog, keys, ARM shapes (SQLite store)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cerulean.errors import ArmError, ControlError
from cerulean.services import deployments as svc
from cerulean.services import models as catalog
from cerulean.services.auth import KeyVerifier, hash_key
from cerulean.services.keys import (
    KeyRing,
    KeySecretMismatch,
    load_key_secret,
    mask_key,
    provision_keys,
    readable_keys,
    regenerate_key,
)
from cerulean.services.management import arm_deployment, arm_error, check_arm_api_version
from cerulean.settings import Settings
from cerulean.store.base import ModelRecord
from cerulean.store.sql import SqlStore
from tests.conftest import KEY1, KEY2

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


def model(name: str, path: str | None = "/models/x.gguf") -> ModelRecord:
    return ModelRecord(name, path, ("chat_completion", "completion"), 32768, None, NOW)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'c.db'}")
    opened.put_model(model("local"))
    opened.put_model(model("embedded", None))
    yield opened
    opened.close()


# -- deployments ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ab", "my-gpt-4o", "a_b.c-1", "x" * 64, "gpt-35-turbo"])
def test_valid_deployment_names(name: str) -> None:
    svc.check_deployment_name(name)


@pytest.mark.parametrize("name", ["a", "x" * 65, "has space", "slash/x", "é-name", ""])
def test_invalid_deployment_names(name: str) -> None:
    with pytest.raises(ControlError) as caught:
        svc.check_deployment_name(name)
    assert caught.value.reason == "invalid"
    assert "2 to 64" in caught.value.message


def test_capacity_and_sku_checks() -> None:
    svc.check_capacity(1)
    svc.check_capacity(svc.MAX_CAPACITY)
    for bad in (0, -5, svc.MAX_CAPACITY + 1):
        with pytest.raises(ControlError, match="out of range"):
            svc.check_capacity(bad)
    assert svc.check_sku("globalstandard") == "GlobalStandard"
    with pytest.raises(ControlError, match="Standard, GlobalStandard"):
        svc.check_sku("ProvisionedManaged")


def test_create_defaults_and_conflict(store: SqlStore) -> None:
    record = svc.create_deployment(store, "chat", "local")
    assert (record.capacity, record.sku, record.version) == (120, "Standard", "1")
    assert store.get_deployment("chat") == record
    with pytest.raises(ControlError, match="already exists") as caught:
        svc.create_deployment(store, "chat", "local")
    assert caught.value.reason == "conflict"


def test_unknown_model_says_how_to_register(store: SqlStore) -> None:
    with pytest.raises(ControlError) as caught:
        svc.create_deployment(store, "chat", "qwen")
    assert "cerulean models add ./file.gguf --name qwen" in caught.value.message
    assert "embedded, local" in caught.value.message
    assert caught.value.code == "DeploymentModelNotSupported"
    assert store.get_deployment("chat") is None


def test_put_updates_in_place(store: SqlStore) -> None:
    first, created = svc.put_deployment(store, "chat", "local", capacity=5, sku="GlobalStandard")
    assert created
    second, created = svc.put_deployment(store, "chat", "embedded", version="2")
    assert not created
    # Not given: kept from the existing deployment, including when it was created.
    assert (second.capacity, second.sku, second.created_at) == (
        5,
        "GlobalStandard",
        first.created_at,
    )
    assert (second.model, second.version) == ("embedded", "2")


def test_update_and_delete(store: SqlStore) -> None:
    svc.create_deployment(store, "chat", "local")
    assert svc.update_capacity(store, "chat", 7).capacity == 7
    assert store.get_deployment("chat").capacity == 7  # type: ignore[union-attr]
    assert svc.delete_deployment(store, "chat").name == "chat"
    for call in (
        lambda: svc.update_capacity(store, "chat", 7),
        lambda: svc.delete_deployment(store, "chat"),
        lambda: svc.get_deployment(store, "chat"),
    ):
        with pytest.raises(ControlError, match="no deployment called 'chat'") as caught:
            call()
        assert caught.value.reason == "not_found"


def test_builtins_are_seeded_once_and_a_users_change_sticks(store: SqlStore) -> None:
    """Issue 13 item 1: a restart never undoes a user's re-pointing or deletion of a built-in."""
    svc.ensure_builtin_deployments(store, "embedded", "1")
    assert {d.name for d in store.list_deployments()} == set(svc.BUILTIN_DEPLOYMENTS)
    assert all(d.builtin for d in store.list_deployments())
    svc.delete_deployment(store, "gpt-4")
    svc.create_deployment(store, "gpt-4", "local")  # delete + create of the same name
    svc.update_model(store, "gpt-35-turbo", "local")  # or update --model
    svc.update_capacity(store, "gpt-4o", 50)  # a capacity change keeps it a built-in
    svc.delete_deployment(store, "gpt-4o-mini")
    for _restart in range(2):
        svc.ensure_builtin_deployments(store, "embedded", "1")
    assert store.get_deployment("gpt-4").model == "local"  # type: ignore[union-attr]
    assert store.get_deployment("gpt-35-turbo").model == "local"  # type: ignore[union-attr]
    assert store.get_deployment("gpt-4o-mini") is None  # deleting it lasts
    # A built-in nobody re-pointed follows the model a server runs (serve --model).
    svc.ensure_builtin_deployments(store, "other", "2")
    followed = store.get_deployment("gpt-4o")
    assert followed is not None and (followed.model, followed.capacity) == ("other", 50)
    assert store.get_deployment("gpt-4").model == "local"  # type: ignore[union-attr]


def test_update_model_checks_the_catalog(store: SqlStore) -> None:
    svc.create_deployment(store, "chat", "local", capacity=9)
    record = svc.update_model(store, "chat", "embedded")
    assert (record.model, record.capacity, record.builtin) == ("embedded", 9, False)
    with pytest.raises(ControlError, match="not in the catalog"):
        svc.update_model(store, "chat", "nope")


@pytest.mark.parametrize("model", ["openai/gpt-4o", "my model", "-x"])
def test_unknown_model_hint_only_suggests_commands_that_work(store: SqlStore, model: str) -> None:
    """Issue 12 item 12: the hint never names a `models add --name` that would be refused."""
    with pytest.raises(ControlError) as caught:
        svc.create_deployment(store, "chat", model)
    assert f"--name {model}" not in caught.value.message
    assert "--name NAME" in caught.value.message
    with pytest.raises(ControlError, match="not a valid model name"):
        catalog.check_model_name(model)


# -- the model catalog ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 129, "a/b"])
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(ControlError, match="not a valid model name"):
        catalog.check_model_name(name)


def test_register_refuses_what_is_not_gguf(store: SqlStore, tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ControlError, match="is not a GGUF file"):
        catalog.register_model(store, text, "notes")
    with pytest.raises(ControlError, match="does not exist"):
        catalog.register_model(store, tmp_path / "missing.gguf", "missing")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(ControlError, match="llama.cpp cannot read"):
        catalog.register_model(store, truncated, "truncated")
    assert store.get_model("notes") is None


def test_register_reads_the_metadata(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "qwen.gguf"
    file.write_bytes(b"GGUF" + b"\0" * 60)
    facts = catalog.GgufFacts("qwen2", 32768, "{{ messages }}")
    monkeypatch.setattr(catalog, "inspect_gguf", lambda path: facts)
    record = catalog.register_model(store, file, "qwen2.5-0.5b-instruct")
    assert record.path == str(file.resolve())
    assert record.capabilities == ("chat_completion", "completion")
    assert (record.context_length, record.chat_template) == (32768, "{{ messages }}")
    assert store.get_model("qwen2.5-0.5b-instruct") == record
    with pytest.raises(ControlError, match="already in the catalog"):
        catalog.register_model(store, file, "qwen2.5-0.5b-instruct")


def test_remove_model_rules(store: SqlStore) -> None:
    svc.create_deployment(store, "one", "local")
    svc.create_deployment(store, "two", "local")
    with pytest.raises(ControlError, match="deployed as one, two; delete those deployments"):
        catalog.remove_model(store, "local")
    with pytest.raises(ControlError, match="built into Cerulean"):
        catalog.remove_model(store, "embedded")
    with pytest.raises(ControlError, match="no model called 'nope'"):
        catalog.remove_model(store, "nope")
    store.delete_deployment("one")
    store.delete_deployment("two")
    catalog.remove_model(store, "local")
    assert store.get_model("local") is None


def test_ensure_models_keeps_registered_files(store: SqlStore) -> None:
    catalog.ensure_models(store, [model("local", None), model("fresh", None)])
    assert store.get_model("local").path == "/models/x.gguf"  # type: ignore[union-attr]
    assert store.get_model("fresh").path is None  # type: ignore[union-attr]
    changed = ModelRecord("embedded", None, ("chat",), 1024, None, NOW)
    catalog.ensure_models(store, [changed])
    assert store.get_model("embedded").context_length == 1024  # type: ignore[union-attr]


# -- keys -----------------------------------------------------------------------------------


def test_regenerate_replaces_one_key(store: SqlStore, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    provision_keys(store, settings)
    before = readable_keys(store, settings)
    assert set(before) == {"key1", "key2"}
    new = regenerate_key(store, settings, "Key1")
    assert len(new) == 32 and new != before["key1"]
    secret = load_key_secret(settings)
    assert store.key_digests() == {
        "key1": hash_key(new, secret),
        "key2": hash_key(before["key2"], secret),
    }
    assert json.loads((settings.home / "keys.json").read_text())["key1"] == new
    assert readable_keys(store, settings) == {"key1": new, "key2": before["key2"]}
    assert mask_key(new) == new[:4] + "****"


def test_regenerate_refusals(store: SqlStore, tmp_path: Path) -> None:
    pinned = Settings(home=tmp_path, key1=KEY1, key2=KEY2)  # type: ignore[arg-type]
    with pytest.raises(ControlError, match="set by CERULEAN_KEY1"):
        regenerate_key(store, pinned, "key1")
    with pytest.raises(ControlError, match="use key1 or key2"):
        regenerate_key(store, pinned, "key3")


def test_unwritten_keys_are_not_readable(store: SqlStore, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", write_keys_file=False)
    provision_keys(store, settings)
    assert readable_keys(store, settings) == {}
    new = regenerate_key(store, settings, "key2")
    assert not (settings.home / "keys.json").exists()
    assert readable_keys(store, settings) == {}
    assert store.key_digests()["key2"] == hash_key(new, load_key_secret(settings))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keyring_rereads_stale_digests(store: SqlStore) -> None:
    asyncio.run(_keyring_rereads_stale_digests(store))


async def _keyring_rereads_stale_digests(store: SqlStore) -> None:
    store.set_key_digest("key1", hash_key(KEY1))
    store.set_key_digest("key2", hash_key(KEY2))
    clock = Clock()
    verifier = KeyVerifier([hash_key(KEY1), hash_key(KEY2)])
    ring = KeyRing(verifier, store, ttl=1.0, retry_interval=0.05, clock=clock)
    store.set_key_digest("key1", hash_key("n" * 32))  # another process regenerated key1
    assert not await ring.refresh()  # fresh enough: the old key still verifies
    assert verifier.verify(KEY1)
    clock.now += 0.06
    assert await ring.refresh(failed=True)  # a failed key re-reads at once: the new one works
    assert verifier.verify("n" * 32) and not verifier.verify(KEY1)
    store.set_key_digest("key2", hash_key("m" * 32))
    clock.now += 0.5
    assert not await ring.refresh()
    clock.now += 0.6
    assert await ring.refresh()  # past the ttl: the old key2 stops working
    assert not verifier.verify(KEY2)


def test_keyring_ttl_zero_reads_every_time(store: SqlStore) -> None:
    asyncio.run(_keyring_ttl_zero(store))


async def _keyring_ttl_zero(store: SqlStore) -> None:
    store.set_key_digest("key1", hash_key(KEY1))
    ring = KeyRing(KeyVerifier([]), store, ttl=0, clock=Clock())
    assert await ring.refresh()
    assert await ring.refresh()
    assert ring.verifier.verify(KEY1)


# -- ARM shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["2023-05-01", "2024-10-01", "2025-09-01", "2025-04-01-preview"]
)
def test_arm_api_versions_accepted(version: str) -> None:
    check_arm_api_version(version)


@pytest.mark.parametrize(
    ("version", "code"),
    [
        (None, "MissingApiVersionParameter"),
        ("", "MissingApiVersionParameter"),
        ("2022-12-01", "InvalidApiVersionParameter"),
        ("2023-04-30", "InvalidApiVersionParameter"),
        ("latest", "InvalidApiVersionParameter"),
        ("2024-13-01", "InvalidApiVersionParameter"),
    ],
)
def test_arm_api_versions_refused(version: str | None, code: str) -> None:
    with pytest.raises(ArmError) as caught:
        check_arm_api_version(version)
    assert caught.value.status_code == 400
    assert caught.value.body() == {"error": {"code": code, "message": caught.value.message}}


def test_arm_deployment_shape(store: SqlStore) -> None:
    record = svc.create_deployment(store, "chat", "local", capacity=60)
    account = "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a"
    body = arm_deployment(record, store.get_model("local"), account)
    assert body["id"] == account + "/deployments/chat"
    assert body["type"] == "Microsoft.CognitiveServices/accounts/deployments"
    assert body["sku"] == {"name": "Standard", "capacity": 60}
    props = body["properties"]
    assert props["model"] == {"format": "OpenAI", "name": "local", "version": "1"}
    assert props["provisioningState"] == "Succeeded"
    assert props["capabilities"] == {"chatCompletion": "true", "completion": "true"}
    # The docs' example for capacity 60 (§7): 60 requests per 10 s, 60,000 tokens per minute.
    assert props["rateLimits"] == [
        {"key": "request", "renewalPeriod": 10, "count": 60},
        {"key": "token", "renewalPeriod": 60, "count": 60000},
    ]
    assert body["systemData"]["createdAt"].endswith("Z")


def test_control_errors_map_to_arm_statuses() -> None:
    for reason, status in (("invalid", 400), ("not_found", 404), ("conflict", 409)):
        error = arm_error(ControlError("why", reason=reason, code="Code"))  # type: ignore[arg-type]
        assert (error.status_code, error.body()) == (
            status,
            {"error": {"code": "Code", "message": "why"}},
        )


# -- key strength, keyed digests, file modes --------------------------------------------------


def test_weak_pinned_keys_are_refused_unless_allowed(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="CERULEAN_KEY1 has 1 characters") as refused:
        Settings(home=tmp_path, key1="a")  # type: ignore[arg-type]
    assert "CERULEAN_ALLOW_WEAK_KEYS" in str(refused.value)
    assert "'a'" not in str(refused.value)  # the refused value is not repeated
    with pytest.raises(ValidationError, match="CERULEAN_KEY2 has 31"):
        Settings(home=tmp_path, key2="k" * 31)  # type: ignore[arg-type]
    allowed = Settings(home=tmp_path, key1="a", allow_weak_keys=True)  # type: ignore[arg-type]
    assert allowed.key1 is not None and allowed.key1.get_secret_value() == "a"
    with pytest.raises(ValidationError, match="CERULEAN_KEY_SECRET has 5"):
        Settings(home=tmp_path, key_secret="short")  # type: ignore[arg-type]


def test_the_home_is_0700_and_the_database_0600(tmp_path: Path) -> None:
    from cerulean.store.home import open_store

    settings = Settings(home=tmp_path / "home", key1=KEY1)  # type: ignore[arg-type]
    opened = open_store(settings)
    try:
        provision_keys(opened, settings)
    finally:
        opened.close()
    home = settings.home
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "cerulean.db").stat().st_mode & 0o777 == 0o600
    assert (home / "key.secret").stat().st_mode & 0o777 == 0o600
    for leftover in ("cerulean.db-wal", "cerulean.db-shm"):
        if (home / leftover).exists():
            assert (home / leftover).stat().st_mode & 0o777 == 0o600
    # An existing home and database with wider modes are narrowed.
    home.chmod(0o755)
    (home / "cerulean.db").chmod(0o644)
    open_store(settings).close()
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "cerulean.db").stat().st_mode & 0o777 == 0o600


def test_digests_are_keyed_with_the_server_secret(store: SqlStore, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", key1=KEY1, key2=KEY2)  # type: ignore[arg-type]
    keys = provision_keys(store, settings)
    digests = store.key_digests()
    assert all(d.startswith("hmac-sha256:") for d in digests.values())
    assert hash_key(KEY1) not in digests.values()  # the unkeyed digest a copy would crack
    assert keys.verifier.verify(KEY1) and keys.verifier.verify(KEY2)
    # Another server secret cannot verify them: starting with it is refused, saying why.
    other = Settings(
        home=tmp_path / "other",
        key_secret="s" * 40,  # type: ignore[arg-type]
    )
    with pytest.raises(KeySecretMismatch, match="CERULEAN_KEY_SECRET"):
        provision_keys(store, other)


def test_unkeyed_digests_of_earlier_versions_keep_working_and_are_rehashed(
    store: SqlStore, tmp_path: Path
) -> None:
    asyncio.run(_lazy_rehash(store, tmp_path))


async def _lazy_rehash(store: SqlStore, tmp_path: Path) -> None:
    unknown = "u" * 32  # a key whose plaintext this process never saw
    store.set_key_digest("key1", hash_key(KEY1))
    store.set_key_digest("key2", hash_key(unknown))
    settings = Settings(home=tmp_path / "home", key1=KEY1)  # type: ignore[arg-type]
    keys = provision_keys(store, settings)
    secret = load_key_secret(settings)
    assert store.key_digests()["key1"] == hash_key(KEY1, secret)  # known: re-hashed at once
    assert store.key_digests()["key2"] == hash_key(unknown)  # unknown: still valid as it was
    ring = KeyRing(keys.verifier, store, ttl=0)
    assert ring.verifier.verify(unknown)  # the first request with it...
    await ring.refresh()  # ...and the next refresh writes its keyed digest
    assert store.key_digests()["key2"] == hash_key(unknown, secret)
    assert ring.verifier.verify(unknown) and ring.verifier.verify(KEY1)
