"""Identifiers in Azure's formats."""

from __future__ import annotations

import re
import string

from cerulean.protocol.ids import completion_id, request_id


def test_a_completion_id_is_the_prefix_and_29_letters_or_digits() -> None:
    for prefix in ("chatcmpl-", "cmpl-"):
        assert re.fullmatch(re.escape(prefix) + r"[A-Za-z0-9]{29}", completion_id(prefix))


def test_completion_ids_differ_and_use_the_whole_alphabet() -> None:
    ids = [completion_id("") for _ in range(400)]
    assert len(set(ids)) == len(ids)
    seen = set("".join(ids))
    assert seen == set(string.ascii_letters + string.digits)  # 11,600 draws of 62 characters
    firsts = {i[0] for i in ids} | {i[-1] for i in ids}
    assert len(firsts) > 50  # both ends vary, not just the middle


def test_a_request_id_is_a_guid() -> None:
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", request_id()
    )
