"""GBNF grammars that make an answer JSON: any object, or JSON valid against a schema.

llama-cpp-python ships llama.cpp's JSON grammar and its JSON-schema converter; this module uses
both and repairs one gap of the converter: its string rules (``char ::= [^"\\] | ...``, the
``dot`` of patterns, pattern classes such as ``[^x]``) admit raw control characters — and
pattern classes even ``"`` and ``\\`` — which JSON forbids inside strings. Every negated
character class the converter writes is narrowed here so that none of U+0000–U+001F, ``"`` or
``\\`` can appear unescaped, and an answer that ends with ``finish_reason: "stop"`` always
parses (``tests/engines/test_structured_output.py`` checks it against random schemas).

``llama_cpp.llama_grammar`` is imported only when a grammar is built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["json_grammar", "or_text", "strings_without_controls"]

# A negated character class: ``[^`` then escaped characters or anything but ``]``, then ``]``.
_NEGATED_CLASS = re.compile(r"\[\^((?:\\.|[^\]\\])*)\]")
# What a JSON string may not hold unescaped, as GBNF class items: ", \ and U+0000-U+001F.
_FORBIDDEN_IN_STRINGS = '"\\\\\\x00-\\x1F'
_ROOT = re.compile(r"^root\s*::=", re.MULTILINE)


def strings_without_controls(grammar: str) -> str:
    """``grammar`` with every negated character class also excluding what JSON strings forbid.

    In the converter's output negated classes occur only inside string values (``char``,
    ``dot``, pattern classes), so narrowing them all is exact.
    """
    return _NEGATED_CLASS.sub(lambda m: f"[^{m.group(1)}{_FORBIDDEN_IN_STRINGS}]", grammar)


def json_grammar(schema: Mapping[str, Any] | None, *, allow_text: bool = False) -> str:
    """The grammar of JSON valid against ``schema`` (any JSON object for None).

    With ``allow_text`` the answer may instead be text whose first visible character is not
    ``{`` or ``[`` (:func:`or_text`). Raises :class:`ValueError` for a schema the converter
    cannot express.
    """
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if schema is None:
        grammar = str(JSON_GBNF)  # already excludes control characters in strings
    else:
        try:
            grammar = strings_without_controls(str(json_schema_to_gbnf(json.dumps(schema))))
        except ValueError:
            raise
        except Exception as exc:  # the converter raises anything on hostile input
            raise ValueError(f"unsupported JSON schema: {exc}") from exc
    return or_text(grammar) if allow_text else grammar


def or_text(grammar: str) -> str:
    """``grammar`` (after optional whitespace), or text whose first visible character is not
    ``{`` or ``[``: the first character of an answer tells which branch the model took."""
    renamed, count = _ROOT.subn("json-answer ::=", grammar)
    if count != 1:
        raise ValueError("the grammar has no single root rule")
    return (
        f"{renamed}\n"
        "root ::= [ \\t\\n]* json-answer | [ \\t\\n]* free-text\n"
        "free-text ::= [^{\\[ \\t\\n] [^\\x00]*\n"
    )
