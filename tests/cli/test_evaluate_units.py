"""`mdplugin evaluate --units atomic` reports its errors in atomic units and says so in its JSON;
a public-style file whose polarizabilities are symmetric only to rounding is read with one
one-line warning."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms

from mdplugin.cli.parser import main
from mdplugin.core.units import BOHR
from mdplugin.models import build

SMALL = dict(cutoff=3.5, max_radial=3, max_angular=3, n_sparse=20, n_components=30)


def _water(n: int, seed: int, asymmetry: float = 0.0) -> list[Atoms]:
    """Water molecules with a toy polarizability (bohr³, key alpha) that depends on the geometry,
    symmetric to ``asymmetry`` of its largest component."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        a.positions += rng.normal(scale=0.05, size=(3, 3))
        a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        b1, b2 = a.positions[1] - a.positions[0], a.positions[2] - a.positions[0]
        alpha = 6.0 * np.eye(3) + 3.0 * (np.outer(b1, b1) + np.outer(b2, b2))
        alpha[0, 1] += asymmetry * np.abs(alpha).max()
        a.info["alpha"] = alpha.reshape(9)
        frames.append(a)
    return frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    ase.io.write(folder / "train.xyz", _water(30, 0), format="extxyz")
    test = _water(10, 1, asymmetry=7e-4)
    ase.io.write(folder / "test.xyz", test, format="extxyz")
    for a in test:  # the same labels in Å³
        a.info["alpha"] = np.asarray(a.info["alpha"]) * BOHR**3
    ase.io.write(folder / "test_ase.xyz", test, format="extxyz")
    frames = ase.io.read(folder / "train.xyz", ":")
    model = build("lsoap", target="polarizability", **SMALL)
    model.fit(frames, np.array([np.reshape(a.info["alpha"], (3, 3)) for a in frames]) * BOHR**3)
    model.save(folder / "alpha.npz")
    return folder


def _evaluate(capsys, folder, units: str) -> tuple[dict, str]:
    data = folder / ("test.xyz" if units == "atomic" else "test_ase.xyz")
    status = main(["evaluate", str(folder / "alpha.npz"), str(data), "--polarizability-key", "alpha",
                   "--units", units, "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def test_errors_in_the_units_asked_for(files, capsys):
    atomic, err = _evaluate(capsys, files, "atomic")
    ase_units, _ = _evaluate(capsys, files, "ase")
    assert atomic["units"] == {"system": "atomic", "rmse": "bohr³", "mae": "bohr³", "std": "bohr³"}
    assert ase_units["units"]["rmse"] == "Å³" and ase_units["units"]["system"] == "ase"
    for key in ("rmse", "mae", "std"):
        assert atomic[key] == pytest.approx(ase_units[key] / BOHR**3, rel=1e-9)
    assert atomic["rmse_percent_of_std"] == pytest.approx(ase_units["rmse_percent_of_std"], rel=1e-9)
    # the test file's polarizabilities are symmetric to 7e-4: symmetrised, said once in one line
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdplugin: warning: ") and "symmetrised" in lines[0]
    assert "bohr³" in lines[0]


def test_text_output_names_the_units(files, capsys):
    assert main(["evaluate", str(files / "alpha.npz"), str(files / "test.xyz"), "--polarizability-key", "alpha",
                 "--units", "atomic"]) == 0
    out = capsys.readouterr().out
    assert "bohr³" in out and "Å³" not in out
