"""openai 0.28.1: legacy completions the way old programs call them (engine = deployment)."""

import json
import os

import openai

openai.api_type = "azure"
openai.api_base = os.environ["AZURE_OPENAI_ENDPOINT"]
openai.api_version = "2023-05-15"
openai.api_key = os.environ["AZURE_OPENAI_KEY"]
prompt = "The capital of France is"
seen = {}

response = openai.Completion.create(
    engine="gpt-35-turbo", prompt=prompt, max_tokens=8, temperature=0
)
seen["object"] = response["object"]
seen["text"] = response["choices"][0]["text"]

stream = openai.Completion.create(
    engine="gpt-35-turbo", prompt=prompt, max_tokens=8, temperature=0, stream=True
)
seen["stream_text"] = "".join(chunk["choices"][0]["text"] for chunk in stream if chunk["choices"])

scored = openai.Completion.create(
    engine="gpt-35-turbo", prompt=prompt, max_tokens=4, temperature=0, logprobs=2, n=2
)
seen["logprob_tokens"] = len(scored["choices"][0]["logprobs"]["tokens"])
seen["choices"] = len(scored["choices"])

try:
    openai.Completion.create(engine="gpt-35-turbo", prompt=prompt, suffix="!")
    seen["suffix_error"] = "ok"
except openai.error.OpenAIError as exc:
    seen["suffix_error"] = [type(exc).__name__, exc.http_status]

print(json.dumps(seen))
