"""Model files are data, not code: damaged, altered or hostile files end in ModelFileError, never in
another exception, never in running code (extends tests/models/test_model_files.py with fuzzing)."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdplugin.core.errors import ModelFileError
from mdplugin.models import base
from mdplugin.models.base import Model, build, load_model, register

from ..conftest import dichloroethane
from .helpers import FAST, scratch

PWNED = "/tmp/mdplugin-robust-pwned"


@register("_robust_mean")
class MeanModel(Model):
    """Predicts the training mean dipole; enough state to exercise the file format."""

    targets_supported = ("dipole",)

    def __init__(self, target="dipole", shift=0.0):
        self.target = target
        self.shift = shift

    def fit(self, frames, targets, *, comm=None):
        self.mean_ = np.asarray(self._targets(targets).dipole, dtype=float).mean(axis=0) + self.shift
        self.table_ = np.arange(60, dtype=float).reshape(20, 3)
        self.species_ = np.unique(np.concatenate([a.numbers for a in frames]))
        self.is_fitted_ = True
        return self

    def predict(self, frames, return_std=False):
        y = np.tile(self.mean_, (len(frames), 1))
        return (y, np.zeros_like(y)) if return_std else y

    def _get_state(self):
        return {"mean": self.mean_, "table": self.table_}

    def _set_state(self, arrays):
        self.mean_ = arrays["mean"]
        self.table_ = arrays["table"]


def _model() -> MeanModel:
    return build("_robust_mean", shift=1.5).fit([dichloroethane()], np.ones((1, 3)))


def _saved_bytes() -> bytes:
    with scratch() as d:
        _model().save(d / "m.npz")
        return (d / "m.npz").read_bytes()


RAW = _saved_bytes()


def _members(raw: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _same_as_original(m) -> bool:
    ref = _model()
    return (m.get_params() == ref.get_params() and np.array_equal(m.mean_, ref.mean_)
            and np.array_equal(m.table_, ref.table_) and list(m.species_) == list(ref.species_))


def _load_bytes(raw: bytes):
    with scratch() as d:
        path = d / "m.npz"
        path.write_bytes(raw)
        try:
            return load_model(path)
        except ModelFileError as err:
            assert str(path) in str(err)
            return err


@FAST
@given(pos=st.integers(0, len(RAW) - 1), value=st.integers(0, 255))
def test_any_flipped_byte_is_detected_or_harmless(pos, value):
    """Any single byte changed: ModelFileError, or (zip padding/timestamps) the very same model."""
    raw = bytearray(RAW)
    raw[pos] = value
    out = _load_bytes(bytes(raw))
    assert isinstance(out, ModelFileError) or _same_as_original(out)


def test_every_truncation_is_detected():
    for cut in range(0, len(RAW), 7):
        assert isinstance(_load_bytes(RAW[:cut]), ModelFileError), cut


COMPRESSED = _zip(_members(RAW), zipfile.ZIP_DEFLATED)


@FAST
@given(pos=st.integers(0, len(COMPRESSED) - 1), bit=st.integers(0, 7))
def test_flipped_bit_in_compressed_file(pos, bit):
    """savez_compressed-style files too (zlib errors, 'encrypted' flags, unknown zip versions)."""
    raw = bytearray(COMPRESSED)
    raw[pos] ^= 1 << bit
    out = _load_bytes(bytes(raw))
    assert isinstance(out, ModelFileError) or _same_as_original(out)


def test_compressed_original_loads():
    assert _same_as_original(_load_bytes(COMPRESSED))


def _with_meta(edit) -> bytes:
    members = _members(RAW)
    meta = json.loads(str(np.load(io.BytesIO(members["__metadata__.npy"]))))
    edit(meta)
    buf = io.BytesIO()
    np.save(buf, np.array(json.dumps(meta)))
    members["__metadata__.npy"] = buf.getvalue()
    return _zip(members)


@pytest.mark.parametrize("edit", [
    lambda m: m["params"].update(shift=2.5),
    lambda m: m.update(species=[1, 6, 8]),
    lambda m: m.update(target="polarizability"),
    lambda m: m["units"].update(dipole="D"),
])
def test_edited_metadata_fails_its_checksum(edit):
    out = _load_bytes(_with_meta(edit))
    assert isinstance(out, ModelFileError) and "metadata checksum mismatch" in str(out)


@pytest.mark.parametrize("kind", [["_robust_mean"], 3, None, {"a": 1}])
def test_crafted_metadata_of_the_wrong_type(kind):
    """Consistent checksums but nonsense types: still a ModelFileError, not a TypeError."""
    def edit(meta):
        meta["kind"] = kind
        meta["meta_checksum"] = base._meta_checksum(meta)

    out = _load_bytes(_with_meta(edit))
    assert isinstance(out, ModelFileError)


def test_files_without_metadata_checksum_still_load():
    """Older files (before meta_checksum) keep loading: the array checksum still protects the state."""
    def edit(meta):
        del meta["meta_checksum"]

    assert _same_as_original(_load_bytes(_with_meta(edit)))


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


def _pickled_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([Payload()], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("where", ["__metadata__.npy", "table.npy", "extra.npy"])
def test_pickle_payload_anywhere_is_refused(where):
    if os.path.exists(PWNED):
        os.unlink(PWNED)
    members = _members(RAW)
    members[where] = _pickled_npy()
    out = _load_bytes(_zip(members))
    assert isinstance(out, ModelFileError)
    assert not os.path.exists(PWNED)


def test_raw_pickle_member_is_never_unpickled():
    """A member that is a bare pickle (not .npy) is never unpickled: only a checksum mismatch."""
    import pickle

    if os.path.exists(PWNED):
        os.unlink(PWNED)
    members = _members(RAW)
    members["evil.pkl"] = pickle.dumps(Payload())
    out = _load_bytes(_zip(members))
    assert isinstance(out, ModelFileError)
    assert not os.path.exists(PWNED)


def test_a_whole_pickle_file_is_refused():
    import pickle

    if os.path.exists(PWNED):
        os.unlink(PWNED)
    out = _load_bytes(pickle.dumps(Payload()))
    assert isinstance(out, ModelFileError)
    assert not os.path.exists(PWNED)


def test_header_claiming_a_huge_array():
    """A .npy header claiming 10¹⁴ floats: refused without allocating them (MemoryError/EOF caught)."""
    members = _members(RAW)
    npy = members["table.npy"]
    header_len = int.from_bytes(npy[8:10], "little")
    header = npy[10 : 10 + header_len].decode("latin1").replace("(20, 3)", "(100000000000000,)")
    header = header.rstrip("\n")
    header = header + " " * (header_len - len(header) - 1) + "\n"
    members["table.npy"] = npy[:10] + header.encode("latin1") + npy[10 + header_len :]
    assert isinstance(_load_bytes(_zip(members)), ModelFileError)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"PK\x05\x06" + b"\x00" * 18, "no metadata"),  # an empty zip archive
    (b"not a zip", "not an .npz archive"),
    (b"\x93NUMPY\x01\x00", "a single .npy array"),
    (b"\x80\x04K\x01.", "a pickle; refused"),
])
def test_not_a_model_file(content, message):
    out = _load_bytes(content)
    assert isinstance(out, ModelFileError) and message in str(out), out


def test_a_folder_or_missing_path(tmp_path):
    with pytest.raises(ModelFileError):
        load_model(tmp_path)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "absent.npz")


def test_a_valid_npz_that_is_not_a_model(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.ones(3))
    with pytest.raises(ModelFileError, match="not an mdplugin model file"):
        load_model(tmp_path / "plain.npz")


@pytest.mark.parametrize("field", ["version_needed", "encrypted_flag", "compression_method"])
def test_zip_header_fields_that_zipfile_rejects(field):
    """Fields for which zipfile raises NotImplementedError/RuntimeError (found by exhaustive flipping)."""
    raw = bytearray(RAW)
    start = raw.find(b"PK\x01\x02")  # first central-directory entry
    offset = {"version_needed": 6, "encrypted_flag": 8, "compression_method": 10}[field]
    raw[start + offset] = {"version_needed": 0xAD, "encrypted_flag": raw[start + 8] | 1,
                           "compression_method": 99}[field]
    assert isinstance(_load_bytes(bytes(raw)), ModelFileError)
