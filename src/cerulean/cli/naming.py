"""How the user invoked ``cerulean``, so that hints name a command that runs as typed.

``make run`` starts ``.venv/bin/cerulean``; a user who has not activated the venv cannot type
``cerulean``, so a hint saying ``cerulean deployments list`` would not work for them. Hints use
``cerulean`` when that name on ``PATH`` is this program, else the path (or ``python -m``) the
user ran.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

__all__ = ["command_name", "name_commands"]

_SUBCOMMANDS = "models|deployments|keys|reset|serve|upstreams|chat|status"
_HINT = re.compile(rf"(?<![\w./-])cerulean (?=(?:{_SUBCOMMANDS})\b)")


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _run_as_module() -> bool:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name in ("cerulean", "cerulean.__main__")


def command_name(argv0: str | None = None, executable: str | None = None) -> str:
    """``cerulean``, or what to type instead when that is not this program on ``PATH``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    on_path = shutil.which("cerulean")
    if os.path.basename(argv0) == "cerulean":
        if on_path is not None and _same_file(on_path, argv0):
            return "cerulean"
        return argv0
    if _run_as_module():  # python -m cerulean
        if on_path is not None and _same_file(Path(on_path).parent / "python", executable):
            return "cerulean"
        python = os.path.relpath(executable) if executable.startswith(os.getcwd()) else executable
        return f"{python} -m cerulean"
    return "cerulean"


def name_commands(text: str) -> str:
    """``text`` with each ``cerulean <command>`` hint spelled as the user invoked Cerulean."""
    name = command_name()
    if name == "cerulean":
        return text
    return _HINT.sub(lambda _match: f"{name} ", text)
