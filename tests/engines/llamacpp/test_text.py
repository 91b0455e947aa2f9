"""From sampled token bytes to answer text: UTF-8 across tokens, stops, edge whitespace."""

from __future__ import annotations

from cerulean.engines.llamacpp.text import TextAssembler


def run(pieces: list[bytes], stops: tuple[str, ...] = ()) -> tuple[str, bool]:
    assembler = TextAssembler(stops)
    out, stopped = "", False
    for piece in pieces:
        text, stopped = assembler.feed(piece)
        out += text
        if stopped:
            break
    return out + assembler.finish(stopped=stopped), stopped


def test_leading_and_trailing_whitespace_is_dropped() -> None:
    assert run([b" ", b" Hello", b" world", b"\n", b" "]) == ("Hello world", False)


def test_inner_whitespace_is_kept_once_more_text_follows() -> None:
    assert run([b"a", b"\n\n", b"b"]) == ("a\n\nb", False)


def test_a_character_split_across_tokens_is_joined() -> None:
    euro = "€".encode()
    assert run([b"1", euro[:1], euro[1:], b"!"]) == ("1€!", False)


def test_stop_string_split_across_tokens_is_never_shown() -> None:
    text, stopped = run([b"Yes.", b"\nUs", b"er: more"], stops=("\nUser:",))
    assert (text, stopped) == ("Yes.", True)


def test_text_held_for_a_possible_stop_is_released_at_the_end() -> None:
    assert run([b"Yes", b"\nUs"], stops=("\nUser:",)) == ("Yes\nUs", False)
