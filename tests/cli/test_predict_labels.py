"""``mdplugin predict`` keeps the input's labels beside the predictions: predict-then-compare is one
file. The predicted property's own labels are kept as ``<name>_reference`` (per atom for the
forces), the other labels as they were, and the command prints the errors against them."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from mdplugin.cli.parser import main
from mdplugin.models import build
from mdplugin.structures.data import read_dataset, write_dataset

from ..robustness.helpers import labelled


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.xyz"
    write_dataset(path, labelled(8, seed=3))
    return path


def test_dipole_predictions_beside_the_labels(tmp_path, data_file, capsys) -> None:
    data = read_dataset(data_file)
    model = build("rpr", target="dipole").fit(data.frames[:6], data.dipole[:6])
    model.save(tmp_path / "dipole.npz")
    assert main(["predict", str(tmp_path / "dipole.npz"), str(data_file), "-o", str(tmp_path / "out.xyz")]) == 0
    out = capsys.readouterr().out
    predicted = read_dataset(tmp_path / "out.xyz")
    reference = read_dataset(tmp_path / "out.xyz", properties=["dipole"], keys={"dipole": "dipole_reference"})
    np.testing.assert_allclose(predicted.dipole, model.predict(data.frames), atol=1e-10)
    np.testing.assert_allclose(reference.dipole, data.dipole, atol=1e-12)  # the input's labels, kept
    np.testing.assert_allclose(predicted.polarizability, data.polarizability, atol=1e-12)  # others as they were
    np.testing.assert_allclose(predicted.energy, data.energy, atol=1e-12)
    rmse = np.sqrt(np.mean((model.predict(data.frames) - data.dipole) ** 2))
    assert f"against the file's dipole labels (kept as dipole_reference): RMSE {rmse:.4g}" in out


def test_energy_predictions_keep_the_reference_forces_per_atom(tmp_path, data_file, capsys) -> None:
    data = read_dataset(data_file)
    model = build("soap", target="energy", n_sparse=10, max_radial=2, max_angular=1)
    model.fit(data.frames, {"energy": data.energy, "forces": data.forces}).save(tmp_path / "energy.npz")
    assert main(["predict", str(tmp_path / "energy.npz"), str(data_file), "-o", str(tmp_path / "out.xyz")]) == 0
    frames = ase.io.read(tmp_path / "out.xyz", ":")
    for frame, forces, energy in zip(frames, data.forces, data.energy):
        np.testing.assert_allclose(frame.arrays["forces_reference"], forces, atol=1e-8)
        assert frame.info["energy_reference"] == pytest.approx(energy)
    predicted = read_dataset(tmp_path / "out.xyz")
    np.testing.assert_allclose(np.concatenate(predicted.forces), np.concatenate(model.predict_forces(data.frames)),
                               atol=1e-7)
    assert "against the file's forces labels" in capsys.readouterr().out


def test_structures_without_labels_get_predictions_only(tmp_path, data_file, capsys) -> None:
    data = read_dataset(data_file)
    build("rpr", target="dipole").fit(data.frames, data.dipole).save(tmp_path / "dipole.npz")
    ase.io.write(tmp_path / "bare.xyz", data.frames)
    assert main(["predict", str(tmp_path / "dipole.npz"), str(tmp_path / "bare.xyz"), "-o",
                 str(tmp_path / "out.xyz")]) == 0
    assert "against" not in capsys.readouterr().out
    assert "dipole_reference" not in ase.io.read(tmp_path / "out.xyz").info


def test_an_unknown_element_names_the_file(tmp_path, data_file, capsys) -> None:
    data = read_dataset(data_file)
    build("rpr", target="dipole").fit(data.frames, data.dipole).save(tmp_path / "dipole.npz")
    ase.io.write(tmp_path / "water.xyz", molecule("H2O"))
    assert main(["predict", str(tmp_path / "dipole.npz"), str(tmp_path / "water.xyz"), "-o",
                 str(tmp_path / "out.xyz")]) == 2
    assert f"{tmp_path / 'water.xyz'}: " in capsys.readouterr().err
