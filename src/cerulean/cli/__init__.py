"""The ``cerulean`` command line: ``serve`` and the control-plane commands.

Only ``serve`` (and ``models add``, which reads a GGUF file) import llama.cpp, and only when
they run: every other command works on the store alone.
"""

from cerulean.cli.main import main

__all__ = ["main"]
