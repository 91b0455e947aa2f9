"""`cerulean serve --model X.gguf` with a GGUF that carries a chat template renders it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from openai import AzureOpenAI

from tests.conformance.recorder import recording_client
from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow

# A small Jinja template in Hugging Face's style, with a marker we can see in the token count.
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else 'user' }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.fixture(scope="module")
def templated_gguf(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = next((server.home / "models").glob("gemma*.gguf"))  # not the embedding model
    target = tmp_path_factory.mktemp("gguf") / "gemma-with-template.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(source),
            str(target),
            "--chat-template",
            TEMPLATE,
            "--force",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def test_template_path(templated_gguf: Path, tmp_path: Path) -> None:
    import llama_cpp

    server = Server(home=tmp_path / "home", extra_args=["--model", str(templated_gguf)]).start()
    try:
        client = AzureOpenAI(
            azure_endpoint=server.endpoint,
            api_key=server.key1,
            api_version="2024-10-21",
            http_client=recording_client(),
        )
        messages = [{"role": "user", "content": "Say hello."}]
        completion = client.chat.completions.create(model="gpt-4", messages=messages, max_tokens=4)  # type: ignore[arg-type]
        assert completion.model == "gemma-with-template"
        vocab = llama_cpp.Llama(model_path=str(templated_gguf), vocab_only=True, verbose=False)
        rendered = "<bos><start_of_turn>user\nSay hello.<end_of_turn>\n<start_of_turn>model\n"
        expected = len(vocab.tokenize(rendered.encode(), add_bos=False, special=True))
        assert completion.usage is not None and completion.usage.prompt_tokens == expected
    finally:
        server.stop()
