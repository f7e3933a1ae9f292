"""A local model's identity is its files' contents (streamed SHA-256, cached by size and mtime), not names and
sizes: a mask or a reproduce check built on one model is refused on another with the same shapes."""

from __future__ import annotations

import shutil

import pytest

from fnsft import models
from fnsft.recipe.schema import ModelSection


def _identity(path):
    return models.resolve_model(ModelSection(name_or_path=str(path))).identity


def test_same_shapes_other_weights_is_another_identity(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FNSFT_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other"
    shutil.copytree(tiny_llama_dir, other)
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one weight's last byte: same size, same shapes
    weights.write_bytes(bytes(data))
    assert _identity(tiny_llama_dir)["files_digest"] != _identity(other)["files_digest"]
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_dir, copy)
    assert _identity(copy)["files_digest"] == _identity(tiny_llama_dir)["files_digest"]


def test_hashes_are_cached_by_size_and_mtime(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FNSFT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model)
    first = _identity(model)
    assert (tmp_path / "cache" / "file-hashes.json").is_file()

    def no_reading(path):
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(models, "file_sha256", no_reading)
    assert _identity(model) == first  # nothing read: every file's size and mtime are unchanged
    (model / "config.json").write_text((model / "config.json").read_text() + " ")
    with pytest.raises(AssertionError, match="config.json was hashed again"):
        _identity(model)


def test_auto_map_on_a_known_model_type_is_a_warning(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("FNSFT_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "custom"
    shutil.copytree(tiny_llama_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}))
    _identity(model)
    warning = " ".join(capsys.readouterr().err.split())
    assert "auto_map names custom model code, which is ignored" in warning and "'llama'" in warning
    _identity(tiny_llama_dir)
    assert "auto_map" not in capsys.readouterr().err
