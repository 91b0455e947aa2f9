"""`python -m cerulean` runs the CLI."""

from __future__ import annotations

from cerulean.cli import main

main()
