"""Convert a BERT sentence-embedding model (Hugging Face layout) into a GGUF file for llama.cpp.

The source is a directory as sentence-transformers saves it: ``config.json`` (a ``BertModel``),
``model.safetensors``, the WordPiece ``vocab.txt``, ``tokenizer_config.json`` and the pooling
module's ``1_Pooling/config.json``. The result is what llama.cpp's ``bert`` architecture loads:
the same weights under GGUF tensor names, the hyperparameters, the pooling type and the WordPiece
vocabulary rewritten in llama.cpp's "phantom space" form.

llama.cpp's own converter (``convert_hf_to_gguf.py``) is a script in its source tree, not an
installable module, and it needs ``torch`` and ``transformers``; so the few steps a BERT needs are
written here on top of the ``gguf`` package (llama.cpp's GGUF writer, tensor-name map and local
safetensors reader). Nothing is downloaded: the conversion reads only the local files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

__all__ = [
    "CONVERTER_VERSION",
    "BertSource",
    "ConversionError",
    "convert_bert",
    "phantom_token",
    "read_source",
    "token_type",
]

# Bump when the GGUF this module writes changes, so that cached conversions are redone.
CONVERTER_VERSION = 1

# Tensors the embedding graph does not use; llama.cpp refuses a file with tensors it does not load.
_UNUSED = ("embeddings.position_ids", "pooler.")
_PHANTOM_SPACE = "\u2581"  # llama.cpp's WPM tokenizer marks the start of a word with it


class ConversionError(Exception):
    """The source directory is not a BERT model this converter understands."""


@dataclass(frozen=True)
class BertSource:
    """What the converter reads from a sentence-transformers model directory."""

    directory: Path
    config: dict[str, Any]
    vocab: list[str]
    special_tokens: dict[str, str]  # role (cls_token, sep_token...) -> token text
    lowercase: bool
    pooling: gguf.PoolingType
    normalize: bool  # whether the pipeline ends in an L2 normalisation module

    @property
    def context_length(self) -> int:
        return int(self.config["max_position_embeddings"])

    @property
    def dimensions(self) -> int:
        return int(self.config["hidden_size"])

    def token_id(self, role: str) -> int:
        return self.vocab.index(self.special_tokens[role])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc


def _pooling(directory: Path) -> gguf.PoolingType:
    config = _read_json(directory / "1_Pooling" / "config.json")
    if config.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if config.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    raise ConversionError(f"unsupported pooling in {directory / '1_Pooling'}: {config}")


def read_source(directory: Path) -> BertSource:
    """Read and check the configuration files of a sentence-transformers BERT model."""
    config = _read_json(directory / "config.json")
    if config.get("model_type") != "bert":
        raise ConversionError(f"{directory} holds a {config.get('model_type')!r} model, not BERT")
    tokenizer = _read_json(directory / "tokenizer_config.json")
    specials = _read_json(directory / "special_tokens_map.json")
    modules = _read_json(directory / "modules.json")
    vocab = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if len(vocab) != config["vocab_size"]:
        raise ConversionError(f"vocab.txt has {len(vocab)} tokens, config {config['vocab_size']}")
    return BertSource(
        directory=directory,
        config=config,
        vocab=vocab,
        special_tokens={role: str(text) for role, text in specials.items()},
        lowercase=bool(tokenizer.get("do_lower_case", True)),
        pooling=_pooling(directory),
        normalize=any(m.get("type", "").endswith(".Normalize") for m in modules),
    )


def phantom_token(token: str) -> str:
    """A WordPiece token in llama.cpp's form: word starts get ``▁``, ``##`` continuations lose it.

    llama.cpp's WPM tokenizer prefixes each word with ``▁`` and then matches the longest tokens,
    so ``play ##ing`` must be stored as ``▁play`` + ``ing``. Bracketed tokens ([CLS]) stay as
    they are: they never come out of plain text.
    """
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return _PHANTOM_SPACE + token


def token_type(token: str, specials: frozenset[str]) -> gguf.TokenType:
    """GGUF token type: the tokenizer's special tokens are control tokens, the rest normal."""
    if token in specials:
        return gguf.TokenType.CONTROL
    if token.startswith("[unused") and token.endswith("]"):
        return gguf.TokenType.UNUSED
    return gguf.TokenType.NORMAL


def _tensors(path: Path) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    with gguf.SafetensorsLocal(path) as tensors:
        for name, tensor in tensors.items():
            if name.startswith(_UNUSED):
                continue
            dtype = {"F32": np.float32, "F16": np.float16}.get(tensor.dtype)
            if dtype is None:
                raise ConversionError(f"tensor {name} has unsupported dtype {tensor.dtype}")
            array = tensor.mmap_bytes().view(dtype).reshape(tensor.shape)
            yield name, array


def _write_hparams(writer: gguf.GGUFWriter, source: BertSource, *, name: str, f16: bool) -> None:
    config = source.config
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(source.context_length)
    writer.add_embedding_length(source.dimensions)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(source.pooling)
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))


def _write_vocab(writer: gguf.GGUFWriter, source: BertSource) -> None:
    specials = frozenset(source.special_tokens.values())
    writer.add_tokenizer_model("bert")  # llama.cpp's WordPiece (WPM) tokenizer
    writer.add_token_list([phantom_token(t) for t in source.vocab])
    writer.add_token_types([token_type(t, specials) for t in source.vocab])
    writer.add_bos_token_id(source.token_id("cls_token"))  # llama.cpp's BOS is BERT's [CLS]
    writer.add_sep_token_id(source.token_id("sep_token"))
    writer.add_unk_token_id(source.token_id("unk_token"))
    writer.add_pad_token_id(source.token_id("pad_token"))
    writer.add_mask_token_id(source.token_id("mask_token"))
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    # BertNormalizer: lowercase, and strip accents when lowercasing (its default). llama.cpp
    # reads these keys (and defaults both to true); the gguf package has no helper for them yet.
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", source.lowercase)
    writer.add_bool("tokenizer.ggml.normalizer.strip_accents", source.lowercase)


def convert_bert(source: BertSource, target: Path, *, name: str, f16: bool = False) -> None:
    """Write ``source`` as a GGUF file at ``target`` (matrices in float16 when ``f16``)."""
    blocks = int(source.config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)
    writer = gguf.GGUFWriter(target, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    try:
        _write_hparams(writer, source, name=name, f16=f16)
        _write_vocab(writer, source)
        for hf_name, array in _tensors(source.directory / "model.safetensors"):
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ConversionError(f"no GGUF name for tensor {hf_name}")
            # Matrices may be float16; norms, biases and the token-type rows (added to float32
            # activations, which ggml's CPU add does not do from float16) stay float32.
            half = f16 and array.ndim == 2 and not hf_name.endswith("token_type_embeddings.weight")
            out_type = np.float16 if half else np.float32
            writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=out_type))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
