"""Shared fixtures: a clean environment, settings in a temporary home, the in-process app.

Every response a test's client receives (the TestClient here, the recording clients of
tests/e2e) is validated against the Azure OpenAI spec when the test ends: see docs/conformance.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from cerulean.app import create_app
from cerulean.engines.fake import FakeEngine
from cerulean.settings import Settings
from tests.conformance.recorder import RECORDER, record_responses
from tests.conformance.validator import conformance, report

KEY1 = "0123456789abcdef0123456789abcdef"
KEY2 = "fedcba9876543210fedcba9876543210"

# Property-based tests are reproducible: the same examples on every run, no example database.
hypothesis_settings.register_profile("cerulean", derandomize=True, database=None, deadline=None)
hypothesis_settings.load_profile("cerulean")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CERULEAN_*, AZURE_* or OPENAI_* variables leak in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("CERULEAN_", "AZURE_OPENAI", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def conforming_responses(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test (at teardown) if a response it received breaks the spec.

    Whatever was recorded since the previous test ended is checked too (a stream closed late);
    each violation names the test that sent the request.
    """
    RECORDER.origin = request.node.nodeid
    yield
    checker = conformance()
    violations = [v for exchange in RECORDER.drain() for v in checker.check(exchange)]
    if violations:
        pytest.fail(
            f"{len(violations)} violation(s) of the Azure OpenAI spec (docs/conformance.md):\n"
            + report(violations),
            pytrace=False,
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = conformance().counts
    if counts:
        validated = ", ".join(f"{n} x {schema}" for schema, n in sorted(counts.items()))
        terminalreporter.write_line(f"conformance: validated {validated}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", key1=KEY1, key2=KEY2)  # type: ignore[arg-type]


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(settings: Settings, fake_engine: FakeEngine) -> Iterator[TestClient]:
    app = create_app(settings, {"fake-model": fake_engine})
    with TestClient(app, raise_server_exceptions=False) as test_client:
        record_responses(test_client)
        test_client.headers["api-key"] = KEY1
        yield test_client
