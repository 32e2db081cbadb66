"""`mdplugin label/train/evaluate/predict` with the hamiltonian model, end to end; bad input in one line."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from mdplugin.cli.parser import main
from mdplugin.structures.data import read_dataset
from mdplugin.structures.hamiltonians import read_hamiltonians

from ..support.hamiltonian_utils import LIGHT, distorted_waters

pytest.importorskip("pyscf")


def test_label_train_evaluate_predict(tmp_path, capsys):
    train, test = tmp_path / "train.xyz", tmp_path / "test.xyz"
    ase.io.write(tmp_path / "train_in.xyz", distorted_waters(30, seed=1))
    ase.io.write(tmp_path / "test_in.xyz", distorted_waters(8, seed=2))
    for src, out in ((tmp_path / "train_in.xyz", train), (tmp_path / "test_in.xyz", test)):
        assert main(["label", str(src), "-o", str(out), "--oracle", "pyscf", "--properties",
                     "hamiltonian,dipole", "--xc", "hf", "--quiet"]) == 0
    model = tmp_path / "h.npz"
    assert main(["train", str(train), "--target", "hamiltonian", "--model", "hamiltonian", "-o", str(model),
                 "--hypers", json.dumps(LIGHT)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), str(test), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["target"] == "hamiltonian" and result["n"] == 8
    assert result["orbital_energies_rmse"] < 0.05 and result["rmse"] < 0.05  # eV
    assert result["dipole_rmse"] < 0.02  # e·Å: the derived dipole against the labelled one
    assert main(["evaluate", str(model), str(test)]) == 0
    text = capsys.readouterr().out
    assert "orbital_energies_rmse" in text and " eV" in text and " e·Å" in text
    out = tmp_path / "pred.xyz"
    assert main(["predict", str(model), str(test), "-o", str(out)]) == 0
    pred = read_dataset(out)
    ref = read_dataset(test)
    np.testing.assert_allclose(pred.dipole, ref.dipole, atol=0.05)
    frames = ase.io.read(out, ":")
    assert "gap" in frames[0].info and "polarizability_std" in frames[0].info
    matrices = read_hamiltonians(tmp_path / "pred.hamiltonian.npz", pred.frames)
    truth = read_hamiltonians(tmp_path / "test.hamiltonian.npz", ref.frames)
    assert np.abs(matrices.fock[0] - truth.fock[0]).max() < 0.2


def test_bad_input_is_one_line(tmp_path, capsys):
    data = tmp_path / "d.xyz"
    ase.io.write(data, distorted_waters(3))

    def fails(args, *fragments):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mdplugin: error:"), err
        for fragment in fragments:
            assert fragment in err[0]

    fails(["train", str(data), "--target", "hamiltonian", "--model", "hamiltonian", "-o", str(tmp_path / "h.npz")],
          "d.hamiltonian.npz: no such Hamiltonian file")
    fails(["train", str(data), "--target", "dipole", "--model", "hamiltonian", "-o", str(tmp_path / "h.npz")],
          "cannot learn target 'dipole'")
    odd = tmp_path / "odd.xyz"
    ase.io.write(odd, [molecule("H2O"), molecule("OH")])
    fails(["label", str(odd), "-o", str(tmp_path / "o.xyz"), "--oracle", "pyscf", "--properties", "hamiltonian"],
          "frame 1", "odd", "no spin given")
