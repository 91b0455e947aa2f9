"""`cerulean models | deployments | keys | reset`, run in-process with click's runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cerulean.cli import main
from cerulean.cli.serverlock import ServerLock, running_server
from cerulean.services import models as catalog
from cerulean.settings import Settings
from cerulean.store.sql import SqlStore


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--home", str(home)], input=input)


@pytest.fixture
def gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the catalog accepts (the llama.cpp read is replaced; e2e tests use a real one)."""
    path = tmp_path / "qwen.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    facts = catalog.GgufFacts("qwen2", 32768, "{{ messages }}")
    monkeypatch.setattr(catalog, "inspect_gguf", lambda _path: facts)
    return path


COMMANDS = [
    ["models"],
    ["models", "add"],
    ["models", "pull"],
    ["models", "list"],
    ["models", "remove"],
    ["deployments"],
    ["deployments", "create"],
    ["deployments", "list"],
    ["deployments", "show"],
    ["deployments", "update"],
    ["deployments", "delete"],
    ["keys"],
    ["keys", "list"],
    ["keys", "regenerate"],
    ["roles"],
    ["roles", "assign"],
    ["roles", "remove"],
    ["roles", "list"],
    ["tokens"],
    ["tokens", "issue"],
    ["tokens", "jwks"],
    ["account"],
    ["account", "show"],
    ["account", "update"],
    ["reset"],
    ["chat"],
    ["status"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage: main " + " ".join(command) in result.output
    if len(command) > 1 or command in (["chat"], ["status"]):
        assert "--home" in result.output


def test_models_add_list_remove(home: Path, gguf: Path) -> None:
    added = run(home, "models", "add", str(gguf), "--name", "qwen2.5-0.5b-instruct")
    assert added.exit_code == 0, added.output
    assert "Registered qwen2.5-0.5b-instruct" in added.output
    assert "context 32768 tokens, chat and completions, its own chat template" in added.output
    listed = run(home, "models", "list")
    assert listed.exit_code == 0
    rows = [line for line in listed.output.splitlines() if "qwen2.5" in line or "gemma" in line]
    assert "chat_completion, completion" in rows[1] and "32768" in rows[1] and "yes" in rows[1]
    assert str(gguf) in listed.output
    assert "gemma-3-270m" in rows[0] and "(embedded)" in rows[0] and " no " in rows[0]
    again = run(home, "models", "add", str(gguf), "--name", "qwen2.5-0.5b-instruct")
    assert again.exit_code == 1 and "already in the catalog" in again.output
    removed = run(home, "models", "remove", "qwen2.5-0.5b-instruct")
    assert removed.exit_code == 0 and gguf.exists()
    assert "qwen2.5" not in run(home, "models", "list").output


def test_models_add_refuses_a_non_gguf(home: Path, tmp_path: Path) -> None:
    text = tmp_path / "readme.txt"
    text.write_text("not a model")
    result = run(home, "models", "add", str(text), "--name", "x1")
    assert result.exit_code == 1
    assert "is not a GGUF file" in result.output


def test_deployments_lifecycle(home: Path, gguf: Path) -> None:
    assert run(home, "models", "add", str(gguf), "--name", "qwen").exit_code == 0
    created = run(home, "deployments", "create", "chat-1", "--model", "qwen")
    assert created.exit_code == 0, created.output
    assert "capacity 120 (120,000 tokens and 720 requests per minute)" in created.output
    assert "No server runs on this data directory: the model loads when one does." in created.output
    listed = run(home, "deployments", "list")
    row = next(line for line in listed.output.splitlines() if "chat-1" in line)
    assert "qwen" in row and "120,000" in row and "720" in row
    assert "gpt-35-turbo" not in listed.output  # no server has run on this home yet
    shown = run(home, "deployments", "show", "chat-1")
    assert "Standard" in shown.output and "created" in shown.output
    updated = run(home, "deployments", "update", "chat-1", "--capacity", "5")
    assert updated.exit_code == 0 and "5,000 tokens and 30 requests" in updated.output
    blocked = run(home, "models", "remove", "qwen")
    assert blocked.exit_code == 1 and "deployed as chat-1" in blocked.output
    deleted = run(home, "deployments", "delete", "chat-1")
    assert deleted.exit_code == 0
    gone = run(home, "deployments", "show", "chat-1")
    assert gone.exit_code == 1 and "no deployment called 'chat-1'" in gone.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "chat-1", "--model", "nope"], "cerulean models add ./file.gguf --name nope"),
        (["create", "c", "--model", "gemma-3-270m"], "2 to 64 letters"),
        (["create", "chat-1", "--model", "gemma-3-270m", "--capacity", "0"], "out of range"),
        (["create", "chat-1", "--model", "gemma-3-270m", "--sku", "PTU"], "not supported"),
        (["update", "nope", "--capacity", "3"], "no deployment called 'nope'"),
        (["delete", "nope"], "no deployment called 'nope'"),
    ],
)
def test_deployment_errors(home: Path, args: list[str], message: str) -> None:
    result = run(home, "deployments", *args)
    assert result.exit_code == 1
    assert message in result.output


def test_create_twice_is_refused(home: Path) -> None:
    assert run(home, "deployments", "create", "dup", "--model", "gemma-3-270m").exit_code == 0
    again = run(home, "deployments", "create", "dup", "--model", "gemma-3-270m")
    assert again.exit_code == 1 and "already exists" in again.output


def provision(home: Path) -> dict[str, str]:
    from cerulean.services.keys import provision_keys

    home.mkdir(parents=True, exist_ok=True)
    store = SqlStore(f"sqlite:///{home / 'cerulean.db'}")
    try:
        provision_keys(store, Settings(home=home))
    finally:
        store.close()
    keys: dict[str, str] = json.loads((home / "keys.json").read_text())
    return keys


def test_keys_list_and_regenerate(home: Path) -> None:
    keys = provision(home)
    listed = run(home, "keys", "list").output
    assert f"{keys['key1'][:4]}****" in listed and keys["key1"] not in listed
    result = CliRunner().invoke(main, ["keys", "regenerate", "KEY2", "--home", str(home)])
    assert result.exit_code == 0
    new = result.stdout.strip()
    assert len(new) == 32 and new != keys["key2"]
    assert "the old one no longer works" in result.stderr
    assert json.loads((home / "keys.json").read_text()) == {"key1": keys["key1"], "key2": new}
    assert f"{new[:4]}****" in run(home, "keys", "list").output
    bad = run(home, "keys", "regenerate", "key3")
    assert bad.exit_code == 2
    shown = run(home, "keys", "list", "--show")
    assert keys["key1"] in shown.output and new in shown.output
    assert json.loads(run(home, "keys", "list", "--json").output) == {
        "key1": f"{keys['key1'][:4]}****",
        "key2": f"{new[:4]}****",
    }
    assert json.loads(run(home, "keys", "list", "--json", "--show").output)["key2"] == new


READ_ONLY = [
    ["models", "list"],
    ["deployments", "list"],
    ["deployments", "show", "gpt-4"],
    ["keys", "list"],
    ["upstreams", "list"],
    ["upstreams", "show", "box"],
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_read_only_commands_never_create_a_home(home: Path, command: list[str]) -> None:
    """Issue 13 item 4: a wrong --home is said, not answered with an empty table."""
    result = run(home, *command)
    assert result.exit_code == 1
    assert f"no Cerulean data directory at {home.resolve()}" in result.output
    assert "--home DIR or CERULEAN_HOME=DIR" in result.output
    assert not home.exists()


def test_a_missing_home_names_the_running_servers_home(home: Path, tmp_path: Path) -> None:
    """The hint names the data directory of a `cerulean serve` running for this user."""
    import subprocess
    import sys

    served = tmp_path / "served"
    served.mkdir()
    script = (
        "import sys, time; from cerulean.cli.serverlock import ServerLock\n"
        "with ServerLock(__import__('pathlib').Path(sys.argv[-1]), port=1):\n"
        "    print('locked', flush=True); time.sleep(30)\n"
    )
    # A process whose command line reads like `cerulean serve --home DIR`.
    child = subprocess.Popen(
        [sys.executable, "-c", script, "cerulean", "serve", "--home", str(served)],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"locked\n"
        result = run(home, "deployments", "list")
        assert result.exit_code == 1
        assert "A server is running with --home " in result.output
        assert f"--home {served.resolve()}" in result.output  # (other servers may run too)
        assert "cerulean deployments list --home " in result.output
    finally:
        child.kill()
        child.wait()


def test_list_and_show_print_json(home: Path, gguf: Path) -> None:
    assert run(home, "models", "add", str(gguf), "--name", "qwen").exit_code == 0
    assert run(home, "deployments", "create", "chat-1", "--model", "qwen").exit_code == 0
    models = json.loads(run(home, "models", "list", "--json").output)
    assert {m["name"] for m in models} >= {"qwen", "gemma-3-270m"}
    listed = json.loads(run(home, "deployments", "list", "--json").output)
    assert [d["name"] for d in listed] == ["chat-1"]
    shown = json.loads(run(home, "deployments", "show", "chat-1", "--json").output)
    assert (shown["model"], shown["capacity"], shown["tokens_per_minute"]) == ("qwen", 120, 120000)
    assert json.loads(run(home, "upstreams", "list", "--json").output) == []


def test_update_model_repoints_a_deployment(home: Path, gguf: Path) -> None:
    assert run(home, "models", "add", str(gguf), "--name", "qwen").exit_code == 0
    run(home, "deployments", "create", "chat-1", "--model", "gemma-3-270m", "--capacity", "7")
    updated = run(home, "deployments", "update", "chat-1", "--model", "qwen", "--no-wait")
    assert updated.exit_code == 0, updated.output
    assert "model qwen from now on" in updated.output
    shown = json.loads(run(home, "deployments", "show", "chat-1", "--json").output)
    assert (shown["model"], shown["capacity"]) == ("qwen", 7)
    refused = run(home, "deployments", "update", "chat-1", "--model", "nope")
    assert refused.exit_code == 1 and "not in the catalog" in refused.output


def test_reset_asks_and_refuses_while_serving(home: Path) -> None:
    provision(home)
    (home / "models").mkdir()
    (home / "models" / "a.gguf").write_bytes(b"x")
    (home / "mine.txt").write_text("not Cerulean's")
    declined = run(home, "reset", input="n\n")
    assert declined.exit_code == 1 and (home / "cerulean.db").exists()
    with ServerLock(home, port=8123):
        assert running_server(home) == {"pid": os.getpid(), "port": 8123}
        refused = run(home, "reset", "--yes")
        assert refused.exit_code == 1 and "port 8123); stop it first" in refused.output
    assert running_server(home) is None
    done = run(home, "reset", input="y\n")
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in home.iterdir()) == ["mine.txt"]  # only Cerulean's state went
    (home / "mine.txt").unlink()
    assert run(home, "reset", "--yes").output.startswith("Nothing to reset")


def test_reset_keeps_the_key_secret_of_another_database(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "key.secret").write_text("s" * 64)
    (home / "keys.json").write_text("{}")
    monkeypatch.setenv("CERULEAN_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    done = run(home, "reset", "--yes")
    assert done.exit_code == 0, done.output
    assert (home / "key.secret").exists() and not (home / "keys.json").exists()
    monkeypatch.delenv("CERULEAN_DATABASE_URL")
    assert run(home, "reset", "--yes").exit_code == 0
    assert not (home / "key.secret").exists()
