"""Messages a new user meets in the first hour name what is wrong and what would work: a misspelt
hyper-parameter lists the valid names, a bare array given to ``ir_spectrum`` says which shapes are
accepted, ``MLCalculator(energy="xtb")`` points to ``tblite``, ``mdplugin md`` names the file holding
an element the model does not know. Each as one line with exit status 2 on the command line."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from mdplugin.cli.parser import main
from mdplugin.core.errors import ConfigError, DataError, ModelFileError
from mdplugin.engines.ase import MLCalculator
from mdplugin.models import build
from mdplugin.spectra import ir_spectrum, raman_spectrum
from mdplugin.structures.data import write_dataset

from .helpers import labelled, one_error_line


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("kind, target, typo, meant", [
    ("soap", "energy", "cutof", "cutoff"),
    ("lsoap", "dipole", "n_sparce", "n_sparse"),
    ("rpr", "polarizability", "regulariser", "regularizer"),
])
def test_misspelt_hyper_parameter_names_the_valid_ones(kind, target, typo, meant) -> None:
    with pytest.raises(ConfigError) as info:
        build(kind, target=target, **{typo: 1.0})
    text = str(info.value)
    assert repr(typo) in text and f"did you mean {meant!r}" in text
    valid = [p for p in type(build(kind, target=target))._get_param_names() if p != "target"]
    assert all(name in text for name in valid)  # every valid name is listed


def test_misspelt_hyper_parameter_on_the_command_line(tmp_path, capsys) -> None:
    data = tmp_path / "data.xyz"
    write_dataset(data, labelled())
    rc, _, err = _run(capsys, ["train", data, "--target", "energy", "--model", "soap", "-o", tmp_path / "m.npz",
                               "--hypers", '{"cutof": 5}'])
    line = one_error_line(err)
    assert rc == 2
    assert "'cutof'" in line and "did you mean 'cutoff'" in line and "max_radial" in line
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("function", [ir_spectrum, raman_spectrum])
def test_spectrum_of_a_bare_array_says_which_shapes_work(function) -> None:
    series = np.random.default_rng(0).normal(size=(200, 3))
    with pytest.raises(ConfigError) as info:
        function(series, 1.0, 300.0)
    text = str(info.value)
    assert "(200, 3)" in text and "[array]" in text
    assert "(n_frames, 3)" in text and "(n_frames, 9)" in text
    # and the form it suggests works
    assert ir_spectrum([series], 1.0, 300.0).kind == "ir"


@pytest.mark.parametrize("name", ["xtb", "GFN2-xTB", "gfn2xtb"])
def test_xtb_in_the_energy_slot_suggests_tblite(name) -> None:
    with pytest.raises(ModelFileError, match=f"{name}: no such model file; did you mean 'tblite'"):
        MLCalculator(energy=name)


def test_a_missing_energy_model_file_says_what_the_slot_takes(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="takes a model file or 'tblite'"):
        MLCalculator(energy=str(tmp_path / "energy.npz"))


def test_md_names_the_file_of_an_unknown_element(tmp_path, capsys) -> None:
    data = labelled(6)  # dichloroethane: H, C, Cl
    model = build("soap", target="energy", n_sparse=10, max_radial=2, max_angular=1)
    model.fit(data.frames, {"energy": data.energy, "forces": data.forces})
    model.save(tmp_path / "energy.npz")
    start = tmp_path / "water.xyz"
    ase.io.write(start, molecule("H2O"))
    rc, _, err = _run(capsys, ["md", start, "--energy", tmp_path / "energy.npz", "--steps", "2", "--dt", "0.5",
                               "--quiet", "-o", tmp_path / "traj.xyz"])
    line = one_error_line(err)
    assert rc == 2
    assert f"{start}: element(s) O not in the training set of the energy model ({tmp_path / 'energy.npz'})" in line
    assert "H, C, Cl" in line
    assert not (tmp_path / "traj.xyz").exists()


def test_calculator_check_elements_passes_known_elements(tmp_path) -> None:
    data = labelled(6)
    model = build("soap", target="energy", n_sparse=10, max_radial=2, max_angular=1)
    model.fit(data.frames, {"energy": data.energy, "forces": data.forces})
    calc = MLCalculator(energy=model)
    calc.check_elements(data.frames[0], "dce.xyz")  # no error
    with pytest.raises(DataError, match=r"^water\.xyz: element\(s\) O not in the training set of the energy model, "):
        calc.check_elements(molecule("H2O"), "water.xyz")
