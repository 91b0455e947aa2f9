"""openai 0.28.1: embeddings as old Azure samples call them (base64 decoded with numpy)."""

import base64
import json
import os

import numpy as np
import openai

openai.api_type = "azure"
openai.api_base = os.environ["AZURE_OPENAI_ENDPOINT"]
openai.api_version = "2023-05-15"
openai.api_key = os.environ["AZURE_OPENAI_KEY"]

response = openai.Embedding.create(
    engine="text-embedding-ada-002",
    input=["The food was delicious and the waiter was friendly.", "Terrible service."],
)
# 0.28.1 asked for base64 (it always does unless told) and decoded it with numpy into lists.
vectors = [np.asarray(item["embedding"]) for item in response["data"]]
single = openai.Embedding.create(engine="text-embedding-ada-002", input="Hello world")
# Asked for explicitly, base64 comes back as the string; decode it the way 0.28.1 does.
explicit = openai.Embedding.create(
    engine="text-embedding-ada-002", input="Hello world", encoding_format="base64"
)
raw = explicit["data"][0]["embedding"]
decoded = np.frombuffer(base64.b64decode(raw), dtype="float32")
try:
    openai.Embedding.create(engine="gpt-35-turbo", input="Hello world")
    wrong = "ok"
except openai.error.InvalidRequestError as exc:
    wrong = [exc.http_status, exc.code]
print(
    json.dumps(
        {
            "types": [type(item["embedding"]).__name__ for item in response["data"]],
            "lengths": [len(v) for v in vectors],
            "norms": [float(np.linalg.norm(v)) for v in vectors],
            "cosine": float(vectors[0] @ vectors[1]),
            "model": response["model"],
            "usage": response["usage"],
            "single_length": len(single["data"][0]["embedding"]),
            "explicit_type": type(raw).__name__,
            "explicit_equals_default": decoded.tolist() == single["data"][0]["embedding"],
            "wrong_deployment": wrong,
        }
    )
)
