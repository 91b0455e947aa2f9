from __future__ import annotations

from cerulean.engines.base import ChatMessage
from cerulean.engines.llamacpp.prompts import BASE_FORMATS, EMBEDDED_FORMAT

QUICKSTART = (
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Does Azure OpenAI support customer managed keys?"),
    ChatMessage("assistant", "Yes, customer managed keys are supported by Azure OpenAI."),
    ChatMessage("user", "Do other Azure AI services support this too?"),
)


def test_embedded_format_is_a_known_format() -> None:
    assert EMBEDDED_FORMAT in BASE_FORMATS


def test_transcript_ends_with_assistant_cue_and_stops_at_next_turn() -> None:
    rendered = BASE_FORMATS["transcript"]().render(QUICKSTART)
    assert rendered.text.splitlines() == [
        "System: You are a helpful assistant.",
        "User: Does Azure OpenAI support customer managed keys?",
        "Assistant: Yes, customer managed keys are supported by Azure OpenAI.",
        "User: Do other Azure AI services support this too?",
        "Assistant:",
    ]
    assert "\nUser:" in rendered.stop and "\nSystem:" in rendered.stop


def test_gemma_turns_fold_system_into_first_user_turn() -> None:
    rendered = BASE_FORMATS["gemma-turns"]().render(QUICKSTART)
    assert rendered.text.startswith("<start_of_turn>user\nYou are a helpful assistant.\n\nDoes")
    assert rendered.text.endswith("<start_of_turn>model\n")
