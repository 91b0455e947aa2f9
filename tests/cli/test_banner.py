"""The lines `cerulean serve` prints once ready (issue 12 item 6, issue 13 item 9)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from cerulean.cli.main import banner_lines
from cerulean.engines.fake import FakeEngine
from cerulean.services.deployments import ensure_builtin_deployments
from cerulean.settings import Settings
from cerulean.store.sql import SqlStore

PINNED = "p" * 32
GENERATED = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Any]:
    store = SqlStore(f"sqlite:///{tmp_path / 'b.db'}")
    ensure_builtin_deployments(store, "fake-model", "1")
    yield SimpleNamespace(
        engines={"fake-model": FakeEngine()},
        embedders={},
        store=store,
        shown_keys={},
        studio=None,
    )
    store.close()


def test_a_generated_key_is_printed_once_in_full(state: Any, tmp_path: Path) -> None:
    state.shown_keys = {"key1": GENERATED}
    text = "\n".join(banner_lines(Settings(home=tmp_path), state))
    assert f"export AZURE_OPENAI_KEY={GENERATED}\n" in text
    assert f"export AZURE_OPENAI_API_KEY={GENERATED}\n" in text
    assert "export OPENAI_API_VERSION=2024-10-21" in text
    assert "behind gpt-35-turbo, gpt-4, gpt-4o, gpt-4o-mini." in text


def test_a_pinned_key_is_masked(state: Any, tmp_path: Path) -> None:
    state.shown_keys = {"key1": PINNED}
    settings = Settings(home=tmp_path, key1=SecretStr(PINNED))
    text = "\n".join(banner_lines(settings, state))
    assert PINNED not in text
    assert 'export AZURE_OPENAI_KEY="$CERULEAN_KEY1"  # pppp****' in text
    assert 'export AZURE_OPENAI_API_KEY="$CERULEAN_KEY1"' in text


def test_the_local_issuer_is_announced_only_when_trusted(state: Any, tmp_path: Path) -> None:
    plain = banner_lines(Settings(home=tmp_path / "h"), state)
    assert not any("Entra ID" in line for line in plain)
    trusting = banner_lines(Settings(home=tmp_path / "h", trust_local_issuer=True), state)
    assert any("tokens issue --principal" in line for line in trusting)


def test_the_studio_address_and_a_generated_token_are_printed(state: Any, tmp_path: Path) -> None:
    from cerulean.services.studio import StudioSessions, sign_in_secret

    settings = Settings(home=tmp_path)
    state.studio = StudioSessions(sign_in_secret(settings), lifetime=60)
    text = "\n".join(banner_lines(settings, state))
    assert "Open Cerulean Studio in your browser: http://127.0.0.1:8000/studio" in text
    assert f"sign-in token: {state.studio.secret.value}" in text


def test_the_admin_token_is_never_printed(state: Any, tmp_path: Path) -> None:
    from cerulean.services.studio import StudioSessions, sign_in_secret

    settings = Settings(home=tmp_path, admin_token=SecretStr("a" * 40))
    state.studio = StudioSessions(sign_in_secret(settings), lifetime=60)
    text = "\n".join(banner_lines(settings, state))
    assert "/studio" in text and "CERULEAN_ADMIN_TOKEN" in text
    assert "a" * 40 not in text
    assert not (tmp_path / "studio.token").exists()
