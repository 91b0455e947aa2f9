"""``cerulean blocklists`` and ``cerulean policies`` on a data directory's store."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from cerulean.cli import main
from cerulean.settings import Settings
from cerulean.store.sql import SqlStore


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--home", str(home)])


def test_block_a_word_on_a_deployment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "blocklists", "create", "words").exit_code == 0
    assert run(home, "blocklists", "add", "words", "zanzibar").exit_code == 0
    added = run(home, "blocklists", "add", "words", r"qu[io]xote\d*", "--regex")
    assert added.exit_code == 0, added.output
    refused = run(home, "blocklists", "add", "words", r"(a)\1", "--regex")
    assert refused.exit_code == 1 and "RE2" in refused.output
    items = json.loads(run(home, "blocklists", "list", "words", "--json").output)
    assert [(i["name"], i["isRegex"]) for i in items] == [("item-1", False), ("item-2", True)]
    assert run(home, "policies", "create", "strict", "--blocklist", "words:prompt").exit_code == 0
    shown = json.loads(run(home, "policies", "show", "strict").output)
    assert shown["properties"]["customBlocklists"] == [
        {"blocklistName": "words", "blocking": True, "source": "Prompt"}
    ]
    made = run(home, "deployments", "create", "chat", "--model", "gemma-3-270m")
    assert made.exit_code == 0, made.output
    assert run(home, "policies", "assign", "chat", "strict").exit_code == 0
    store = SqlStore(Settings(home=home).store_url)
    try:
        record = store.get_deployment("chat")
        assert record is not None and record.rai_policy == "strict"
    finally:
        store.close()
    listed = json.loads(run(home, "policies", "list", "--json").output)
    assert {p["name"]: p["deployments"] for p in listed}["strict"] == "chat"
    assert run(home, "blocklists", "delete", "words").exit_code == 1  # in use
    assert run(home, "policies", "delete", "strict").exit_code == 1  # in use
    assert run(home, "policies", "assign", "chat", "Microsoft.DefaultV2").exit_code == 0
    assert run(home, "policies", "delete", "strict").exit_code == 0
    assert run(home, "blocklists", "delete", "words").exit_code == 0
