"""jaxinterp's own GGUF reader against the ``gguf`` package's ``GGUFReader`` (the
reference): every metadata value and every tensor's name, shape, type and bytes, on a
file written with every value type and several quant types (the bundled SmolLM2 file is read
through it by every SmolLM2 test); corrupt files raise CheckpointError."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from jaxinterp.core.errors import CheckpointError
from jaxinterp.loading.gguf_file import GGUFFile

Q = gguf.GGMLQuantizationType


def _reference(path):
    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return r, meta


def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return np.float32(a) == np.float32(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "all.gguf"
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -3000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**40)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 1 / 3)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_array("t.strs", ["a", "", "Ġthe", "日本"])
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, -1.25])
    w.add_tensor("f32", rng.normal(size=(3, 5)).astype(np.float32))
    w.add_tensor("f16", rng.normal(size=(4, 6)).astype(np.float16))
    w.add_tensor("i32", rng.integers(-9, 9, (7,)).astype(np.int32))
    for qt in (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.BF16):
        q = gguf.quants.quantize(rng.normal(size=(2, 64)).astype(np.float32), qt)
        w.add_tensor(f"q_{qt.name}", q, raw_shape=q.shape, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _check_against_reference(path, skip=()):
    ours = GGUFFile(str(path), skip=skip)
    ref, meta = _reference(path)
    skipped = {k for k in skip if isinstance(meta.get(k), list) and all(isinstance(x, str) for x in meta[k])}
    assert set(ours.metadata) == set(meta) - skipped
    for k, v in ours.metadata.items():
        assert _same(v, meta[k]), k
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors):
        assert a.shape == tuple(int(d) for d in b.shape), a.name
        assert a.tensor_type == b.tensor_type, a.name
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, a.name
        assert np.array_equal(a.data, b.data), a.name
        if a.tensor_type not in (Q.I8, Q.I16, Q.I32, Q.I64):
            np.testing.assert_array_equal(
                gguf.quants.dequantize(a.data, a.tensor_type), gguf.quants.dequantize(b.data, b.tensor_type)
            )
    return ours


def test_every_value_and_tensor_type_matches_gguf_reader(written):
    ours = _check_against_reference(written)
    assert ours.metadata["t.str"] == "héllo ✓" and ours.metadata["t.strs"][3] == "日本"


def test_skipped_string_arrays_are_left_out_and_the_rest_still_reads(written):
    ours = _check_against_reference(written, skip=("t.strs", "t.ints"))
    assert "t.strs" not in ours.metadata
    assert ours.metadata["t.ints"] == [1, -2, 3]  # not a string array: read anyway


@pytest.mark.parametrize("cut", [3, 10, 30, 200, -100])
def test_truncated_or_garbage_files_raise_checkpoint_error(written, tmp_path, cut):
    bad = tmp_path / "bad.gguf"
    raw = written.read_bytes()
    bad.write_bytes(raw[:cut] if cut > 0 else raw[:cut])
    with pytest.raises(CheckpointError, match="bad.gguf"):
        GGUFFile(str(bad))


def test_wrong_magic_and_version(written, tmp_path):
    raw = bytearray(written.read_bytes())
    bad = tmp_path / "magic.gguf"
    bad.write_bytes(b"GGUX" + raw[4:])
    with pytest.raises(CheckpointError, match="no GGUF magic"):
        GGUFFile(str(bad))
    raw[4:8] = (7).to_bytes(4, "little")
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="version 7 is not supported"):
        GGUFFile(str(bad))
    with pytest.raises(CheckpointError, match="no such GGUF file"):
        GGUFFile(str(tmp_path / "absent.gguf"))
