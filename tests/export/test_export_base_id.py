"""The base model exports name: its Hub id (--base-model-id, or the manifest's), never a path on this machine."""

from __future__ import annotations

import shutil

from gguf import GGUFReader

from fnsft.export.pipeline import export_run


def _base_name(gguf_path) -> str | None:
    field = GGUFReader(gguf_path).fields.get("general.base_model.0.name")
    return field.contents() if field is not None else None


def test_a_local_base_is_named_by_the_given_hub_id_or_not_at_all(lora_run_factory, tmp_path):
    run = lora_run_factory("llama")
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy)
    unknown = export_run(copy, merge=True, gguf_types=["f16"])
    assert any("has no Hub id" in note and "--base-model-id" in note for note in unknown.notes)
    (gguf,) = (copy / "exports").glob("*.gguf")
    assert _base_name(gguf) is None  # was the base's local directory
    card = (copy / "exports" / "merged" / "README.md").read_text()
    assert "base_model:" not in card.split("---")[1]

    named = export_run(copy, merge=True, gguf_types=["f16"], base_model_id="org/tiny-base")
    assert not any("Hub id" in note for note in named.notes)
    assert _base_name(gguf) == "org/tiny-base"
    card = (copy / "exports" / "merged" / "README.md").read_text()
    assert "base_model: org/tiny-base" in card and "`org/tiny-base` is the Hub model it was made from" in card
