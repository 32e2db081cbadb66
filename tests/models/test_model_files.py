"""Model files: .npz + JSON, never unpickled, checksummed, versioned; the registry."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import mdplugin
from mdplugin.core.errors import ConfigError, ModelFileError
from mdplugin.models import base
from mdplugin.models.base import Model, build, load_model, register

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "trajectories"


@register("_test_mean")
class MeanModel(Model):
    """Predicts the training mean (a minimal model to exercise the file format)."""

    targets_supported = ("dipole",)

    def __init__(self, target="dipole", shift=0.0):
        self.target = target
        self.shift = shift

    def fit(self, frames, targets, *, comm=None):
        self.mean_ = np.asarray(self._targets(targets).dipole).mean(axis=0) + self.shift
        self.species_ = np.unique(np.concatenate([a.numbers for a in frames]))
        self.is_fitted_ = True
        return self

    def predict(self, frames, return_std=False):
        y = np.tile(self.mean_, (len(frames), 1))
        return (y, np.zeros_like(y)) if return_std else y

    def _get_state(self):
        return {"mean": self.mean_}

    def _set_state(self, arrays):
        self.mean_ = arrays["mean"]


@pytest.fixture
def saved(tmp_path):
    from ..conftest import dichloroethane

    m = build("_test_mean", shift=1.5).fit([dichloroethane()], np.ones((1, 3)))
    path = tmp_path / "m.npz"
    m.save(path)
    return path


def test_round_trip(saved):
    m = load_model(saved)
    assert isinstance(m, MeanModel) and m.shift == 1.5
    assert np.allclose(m.mean_, 2.5)
    assert m.get_params() == {"target": "dipole", "shift": 1.5}
    assert mdplugin.load_model(saved, kind="_test_mean", target="dipole") is not None


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model kind 'nope'"):
        build("nope")


def test_truncated_file(saved):
    raw = saved.read_bytes()
    saved.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load_model(saved)


def _rewrite(path, **arrays):
    buf = io.BytesIO()
    with np.load(path, allow_pickle=False) as npz:
        content = {k: npz[k] for k in npz.files}
    content.update(arrays)
    np.savez(buf, **content)
    path.write_bytes(buf.getvalue())


def test_altered_file_fails_checksum(saved):
    _rewrite(saved, mean=np.array([9.0, 9.0, 9.0]))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(saved)


def test_newer_format_version(saved):
    with np.load(saved, allow_pickle=False) as npz:
        meta = json.loads(str(npz["__metadata__"]))
    meta["format_version"] = base.FORMAT_VERSION + 1
    _rewrite(saved, __metadata__=np.array(json.dumps(meta)))
    with pytest.raises(ModelFileError, match="newer than this mdplugin supports"):
        load_model(saved)


def test_wrong_kind_or_target(saved):
    with pytest.raises(ModelFileError, match="expected 'rpr'"):
        load_model(saved, kind="rpr")
    with pytest.raises(ModelFileError, match="the model's target is 'dipole', expected 'energy'"):
        load_model(saved, target="energy")


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/mdplugin-pwned",))


def test_pickle_payload_is_refused(tmp_path, saved):
    # replace the state array by a pickled object array
    evil2 = tmp_path / "evil2.npz"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(evil2, "w") as dst:
        for name in src.namelist():
            if name == "mean.npy":
                buf = io.BytesIO()
                np.save(buf, np.array([Payload()], dtype=object), allow_pickle=True)
                dst.writestr(name, buf.getvalue())
            else:
                dst.writestr(name, src.read(name))
    import os

    with pytest.raises(ModelFileError, match="pickled objects; refused"):
        load_model(evil2)
    assert not os.path.exists("/tmp/mdplugin-pwned")


def test_the_command_line_parser_does_not_import_the_models():
    """The models derive from scikit-learn's BaseEstimator, whose import costs about a second
    (mdplugin.models.base): ``import mdplugin`` and building the command-line parser (``mdplugin
    md --help``, every command's start) must not import it; ``mdplugin.models`` does."""
    import subprocess
    import sys

    code = ("import sys, mdplugin, mdplugin.cli.parser as p; p.build_parser(); "
            "print('sklearn' in sys.modules, 'mdplugin.models.base' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    code = "import sys, mdplugin; mdplugin.load_model; print('sklearn' in sys.modules, callable(mdplugin.models.build))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]  # lazily, on first use
