"""fnsft's GGUF reader against gguf's own GGUFReader: the same fields and the same tensor bytes, on the real
SmolLM2 GGUF that nobody on the team wrote and on a file gguf's writer made with every value and tensor type."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

from fnsft.export.kquants import quantize_k
from fnsft.gguf_file import read_gguf
from fnsft.models import resolve_package_path
from tests.conftest import SMOLLM2_GGUF


def _assert_same_as_gguf_reader(path):
    ours, reference = read_gguf(path), GGUFReader(path)
    expected = {name: field.contents() for name, field in reference.fields.items() if not name.startswith("GGUF.")}
    assert list(ours.fields) == list(expected)
    for name, value in expected.items():
        assert ours.fields[name] == value, name
    assert [t.name for t in ours.tensors] == [t.name for t in reference.tensors]
    for mine, theirs in zip(ours.tensors, reference.tensors, strict=True):
        assert (mine.tensor_type, mine.shape) == (theirs.tensor_type, tuple(int(d) for d in theirs.shape)), mine.name
        assert mine.data.dtype == theirs.data.dtype and mine.data.shape == theirs.data.shape, mine.name
        assert np.array_equal(mine.data, theirs.data), mine.name
    return ours


def test_the_real_smollm2_gguf_reads_as_gguf_reads_it():
    ours = _assert_same_as_gguf_reader(resolve_package_path(SMOLLM2_GGUF))
    assert len(ours.fields["tokenizer.ggml.tokens"]) == 49152
    assert {t.tensor_type.name for t in ours.tensors} >= {"Q4_1", "F32"}


def test_every_value_type_and_tensor_type_gguf_writes(tmp_path):
    path = tmp_path / "all.gguf"
    writer = GGUFWriter(path, "llama")
    scalars = {GGUFValueType.UINT8: 200, GGUFValueType.INT8: -100, GGUFValueType.UINT16: 60000,
               GGUFValueType.INT16: -30000, GGUFValueType.UINT32: 4_000_000_000, GGUFValueType.INT32: -2_000_000_000,
               GGUFValueType.FLOAT32: 0.5, GGUFValueType.UINT64: 2**63, GGUFValueType.INT64: -(2**62),
               GGUFValueType.FLOAT64: 1e-300, GGUFValueType.BOOL: True, GGUFValueType.STRING: "é ✓ <|im_end|>"}
    for value_type, value in scalars.items():
        writer.add_key_value(f"test.{value_type.name.lower()}", value, value_type)
    writer.add_array("test.ints", [1, -2, 3])
    writer.add_array("test.floats", [0.25, -1.5])
    writer.add_array("test.bools", [True, False])
    writer.add_array("test.strings", ["", "a", "🙂" * 3])
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 512)).astype(np.float32)
    for qtype in (GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0, GGMLQuantizationType.BF16):
        writer.add_tensor(f"w.{qtype.name}", quants.quantize(weights, qtype), raw_dtype=qtype)
    for qtype in (GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K):  # gguf has no K-quant encoder
        writer.add_tensor(f"w.{qtype.name}", quantize_k(weights, qtype.name), raw_dtype=qtype)
    writer.add_tensor("w.F16", weights.astype(np.float16))
    writer.add_tensor("w.F32", weights[0])
    writer.add_tensor("w.I32", np.arange(6, dtype=np.int32).reshape(2, 3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    ours = _assert_same_as_gguf_reader(path)
    assert ours.fields["test.string"] == "é ✓ <|im_end|>" and ours.fields["test.uint64"] == 2**63
    assert ours.fields["test.strings"] == ["", "a", "🙂" * 3]
    q4k = next(t for t in ours.tensors if t.name == "w.Q4_K")
    assert np.abs(quants.dequantize(q4k.data, q4k.tensor_type) - weights).max() < 0.3  # really the Q4_K blocks


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"), (b"GGML" + bytes(40), "not a GGUF file"),
    (b"GGUF" + (1).to_bytes(4, "little") + bytes(16), "version 1"),
    (b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (1).to_bytes(8, "little") + b"\x05", "truncated"),
])
def test_what_is_not_a_readable_gguf_says_why(tmp_path, content, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_gguf(path)


def test_a_file_cut_inside_its_tensor_data_is_truncated(tmp_path):
    path = tmp_path / "cut.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_tensor("w", np.ones((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="tensor w runs past the end"):
        read_gguf(path)
