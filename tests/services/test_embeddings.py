"""Pieces of the embeddings path: the GGUF converter's vocabulary, packing, wire encoding."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from cerulean.engines.base import ModelInfo
from cerulean.engines.embedding import Embeddings
from cerulean.engines.llamacpp.embedder import pack
from cerulean.errors import InvalidRequest
from cerulean.packaged.bertgguf import ConversionError, phantom_token, read_source, token_type
from cerulean.protocol.embeddings import CreateEmbeddingRequest
from cerulean.services.embeddings import (
    check_dimensions,
    detokenize,
    embedding_body,
    encode_base64,
    to_inputs,
)


@pytest.mark.parametrize(
    ("wordpiece", "llama"),
    [
        ("play", "\u2581play"),
        ("##ing", "ing"),
        ("[CLS]", "[CLS]"),
        ("[unused7]", "[unused7]"),
        (".", "\u2581."),
        ("##s", "s"),
    ],
)
def test_phantom_token(wordpiece: str, llama: str) -> None:
    assert phantom_token(wordpiece) == llama


def test_token_type() -> None:
    specials = frozenset({"[CLS]", "[SEP]"})
    assert token_type("[CLS]", specials) == gguf.TokenType.CONTROL
    assert token_type("[unused3]", specials) == gguf.TokenType.UNUSED
    assert token_type("hello", specials) == gguf.TokenType.NORMAL


def _write_model(directory: Path, *, model_type: str = "bert", pooling: str = "mean") -> Path:
    (directory / "1_Pooling").mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "##s"]
    config = {"model_type": model_type, "vocab_size": len(vocab), "max_position_embeddings": 8}
    config |= {"hidden_size": 4}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]"}
    specials |= {"cls_token": "[CLS]", "mask_token": "[MASK]"}
    (directory / "special_tokens_map.json").write_text(json.dumps(specials))
    modules = [{"type": "sentence_transformers.models.Pooling"}]
    modules.append({"type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules))
    pool = {
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_cls_token": pooling == "cls",
    }
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pool))
    return directory


def test_read_source(tmp_path: Path) -> None:
    source = read_source(_write_model(tmp_path / "m"))
    assert source.pooling == gguf.PoolingType.MEAN
    assert source.normalize and source.lowercase
    assert source.context_length == 8 and source.dimensions == 4
    assert source.token_id("cls_token") == 2 and source.token_id("sep_token") == 3


def test_read_source_cls_pooling(tmp_path: Path) -> None:
    assert read_source(_write_model(tmp_path / "m", pooling="cls")).pooling == gguf.PoolingType.CLS


def test_read_source_refuses_other_models(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="not BERT"):
        read_source(_write_model(tmp_path / "m", model_type="llama"))
    with pytest.raises(ConversionError, match="unsupported pooling"):
        read_source(_write_model(tmp_path / "n", pooling="max"))


def test_pack_respects_tokens_and_sequences() -> None:
    assert list(pack([5, 5, 5], tokens=10, sequences=8)) == [[0, 1], [2]]
    assert list(pack([1, 1, 1, 1, 1], tokens=100, sequences=2)) == [[0, 1], [2, 3], [4]]
    assert list(pack([10, 1], tokens=10, sequences=8)) == [[0], [1]]
    assert list(pack([], tokens=10, sequences=8)) == []


def test_encode_base64_little_endian_float32() -> None:
    vector = np.array([1.0, -2.5, 0.125], dtype=np.float32)
    raw = base64.b64decode(encode_base64(vector))
    assert raw == b"\x00\x00\x80\x3f\x00\x00\x20\xc0\x00\x00\x00\x3e"
    big_endian = vector.astype(">f4")
    assert base64.b64decode(encode_base64(big_endian)) == raw  # always little-endian on the wire


def test_embedding_body_float_and_base64() -> None:
    result = Embeddings(np.eye(2, dtype=np.float32), prompt_tokens=7)
    body = embedding_body(result, model="m", encoding=None)
    assert body["data"][1] == {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]}
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    encoded = embedding_body(result, model="m", encoding="base64")
    assert np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), "<f4").tolist() == [
        1.0,
        0.0,
    ]


def _request(value: object, **extra: object) -> CreateEmbeddingRequest:
    return CreateEmbeddingRequest.model_validate({"input": value, **extra})


def test_to_inputs_shapes() -> None:
    assert to_inputs(_request("a")) == ["a"]
    assert to_inputs(_request(["a", "b"])) == ["a", "b"]
    assert to_inputs(_request([1, 2])) == [[1, 2]]
    assert to_inputs(_request([[1], [2, 3]])) == [[1], [2, 3]]


@pytest.mark.parametrize("value", ["", [], [""], [[]], ["x"] * 2049])
def test_to_inputs_refuses(value: object) -> None:
    with pytest.raises(InvalidRequest):
        to_inputs(_request(value))


def test_check_dimensions() -> None:
    info = ModelInfo("m", 512, None, frozenset({"embeddings"}), 384)
    check_dimensions(_request("a", dimensions=384), info)
    check_dimensions(_request("a"), info)
    with pytest.raises(InvalidRequest, match="does not support specifying dimensions"):
        check_dimensions(_request("a", dimensions=256), info)


def test_detokenize_cl100k() -> None:
    # Known cl100k_base ids (tiktoken): "hello world", and the end-of-text special token.
    assert detokenize([[15339, 1917], [100257]]) == ["hello world", "<|endoftext|>"]
    # "🙂 ok" is [9468, 19044, 5509]: whole, it decodes exactly; cut inside the emoji's bytes (a
    # client chunking a long token array), the stray bytes become U+FFFD instead of an error.
    assert detokenize([[9468, 19044, 5509], [9468]]) == ["\N{SLIGHTLY SMILING FACE} ok", "\ufffd"]
    with pytest.raises(InvalidRequest, match="Invalid token id 100256 in input\\[0\\]"):
        detokenize([[100256]])
