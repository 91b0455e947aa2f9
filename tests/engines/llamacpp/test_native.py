"""The llama.cpp wrappers' own decisions (the engine tests load and run real models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from cerulean.engines.llamacpp import native
from cerulean.errors import EngineError


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    native.amx_compiled.cache_clear()
    yield
    native.amx_compiled.cache_clear()


@pytest.mark.parametrize(
    ("info", "amx"),
    [
        (b"CPU : AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | REPACK = 1 | ", True),
        (b"CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 | ", False),
    ],
)
def test_amx_is_read_from_the_builds_system_info(
    monkeypatch: pytest.MonkeyPatch, info: bytes, amx: bool
) -> None:
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: info)
    assert native.amx_compiled() is amx


def test_models_load_without_extra_buffer_types_only_on_an_amx_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []

    def load(path: bytes, params: llama_cpp.llama_model_params) -> None:
        seen.append(bool(params.use_extra_bufts))
        return None  # "could not load": the wrapper's error, after the params were read

    monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", load)
    for info in (b"CPU : AMX_INT8 = 1 | ", b"CPU : AVX2 = 1 | "):
        native.amx_compiled.cache_clear()
        monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda info=info: info)
        with pytest.raises(EngineError):
            native.NativeModel(Path("missing.gguf"), n_gpu_layers=0)
    assert seen == [False, True]
