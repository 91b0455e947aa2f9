"""openai 0.28.1: the error classes users catch must come out of Cerulean's error bodies."""

import json
import os
import sys

import openai

openai.api_type = "azure"
openai.api_base = os.environ["AZURE_OPENAI_ENDPOINT"]
openai.api_version = "2023-05-15"
openai.api_key = os.environ["AZURE_OPENAI_KEY"]
messages = [{"role": "user", "content": "hi"}]
seen = {}


def attempt(label, **kwargs):
    try:
        openai.ChatCompletion.create(messages=messages, max_tokens=2, **kwargs)
        seen[label] = "ok"
    except openai.error.OpenAIError as exc:
        seen[label] = [type(exc).__name__, exc.http_status, getattr(exc, "code", None)]


attempt("unknown_deployment", engine="nope")
attempt("wrong_key", engine="gpt-4", api_key="0" * 32)
attempt("bad_version", engine="gpt-4", api_version="2023-12-01")
attempt("ok", engine="gpt-4")
stream = openai.ChatCompletion.create(engine="gpt-4", messages=messages, max_tokens=5, stream=True)
seen["stream_chunks"] = sum(1 for _ in stream)
json.dump(seen, sys.stdout)
