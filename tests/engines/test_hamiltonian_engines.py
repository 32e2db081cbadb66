"""A hamiltonian model file in the dipole and polarizability slots: the ASE calculator (with
orbital energies and the gap), MD recording them, a spectrum from that trajectory, and a real
i-PI server receiving its dipoles and polarizabilities — swapped in by file name only."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read, write

from mdplugin.engines.ase import MLCalculator
from mdplugin.models import load_model

from ..support.hamiltonian_utils import water_hamiltonian_model
from ..support.ipi_utils import client_command, ipi_input, process, wait

pytest.importorskip("pyscf")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return water_hamiltonian_model(tmp_path_factory.mktemp("hamiltonian"))


def _water(seed=5):
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(seed).normal(scale=0.04, size=atoms.positions.shape)
    return atoms


def test_calculator_gives_the_models_derived_properties(model_file):
    calc = MLCalculator(dipole=model_file, polarizability=model_file)
    assert calc.slots["dipole"] is calc.slots["polarizability"]  # one file, loaded once
    assert len(calc.feature_groups) == 1
    atoms = _water()
    atoms.calc = calc
    ref = load_model(model_file).predict_properties([atoms], return_std=True)
    np.testing.assert_allclose(atoms.get_dipole_moment(), ref["dipole"][0], atol=1e-12)
    np.testing.assert_allclose(calc.get_property("polarizability", atoms), ref["polarizability"][0], atol=1e-12)
    eps = calc.get_property("orbital_energies", atoms)
    assert eps.shape == (7,) and np.all(np.diff(eps) >= 0)
    assert np.isclose(calc.get_property("gap", atoms), eps[5] - eps[4])
    np.testing.assert_allclose(calc.get_property("dipole_std", atoms), ref["dipole_std"][0], atol=1e-12)
    assert calc.get_property("gap_std", atoms) > 0
    # an MD step: new positions, new values
    atoms.positions[0] += 0.02
    assert not np.allclose(atoms.get_dipole_moment(), ref["dipole"][0])
    with pytest.raises(PropertyNotImplementedError, match="hamiltonian model"):
        MLCalculator(energy="tblite").get_property("gap", _water())


def test_md_records_gap_and_a_spectrum_reads_the_dipoles(model_file, tmp_path):
    from mdplugin.engines.md import run_md
    from mdplugin.spectra import spectrum_command

    calc = MLCalculator(energy="tblite", dipole=model_file, polarizability=model_file)
    out = tmp_path / "md.xyz"
    run_md(_water(), calc, steps=40, dt_fs=0.5, output=out, temperature_K=300.0, seed=1, progress=False)
    frames = read(out, ":")
    assert len(frames) == 41
    gaps = [f.info["gap"] for f in frames]
    assert np.std(gaps) > 0 and all(g > 5 for g in gaps)  # eV, water's HF/STO-3G gap is ~27 eV
    assert frames[0].info["orbital_energies"].shape == (7,) and "gap_std" in frames[0].info
    result = spectrum_command("ir", [str(out)], dt=0.5, output=str(tmp_path / "ir.csv"), plot=None, temperature=300.0)
    assert result.meta["n_frames"] == 41


def test_ipi_client_sends_the_derived_dipole_and_polarizability(model_file, tmp_path):
    """``mdplugin ipi --dipole H.npz --polarizability H.npz`` against a real i-PI server: the extras i-PI
    records are the calculator's predictions at the recorded positions."""
    import ipi

    from mdplugin.core.units import BOHR

    start = _water()
    start.cell = [20.0, 20.0, 20.0]
    start.center()
    template = tmp_path / "water.xyz"
    write(template, start)
    prefix = f"{tmp_path}/"
    xml = ipi_input(init=str(template), steps=10, sockets_prefix=prefix, address="ham")
    (tmp_path / "input.xml").write_text(xml)
    argv = ["--template", str(template), "--energy", "tblite", "--dipole", str(model_file), "--polarizability",
            str(model_file), "--unix", "--address", "ham", "--sockets-prefix", prefix, "--timeout", "60"]
    with process(["i-pi", "input.xml"], tmp_path, tmp_path / "ipi.log") as server, \
            process(client_command(argv), tmp_path, tmp_path / "client.log") as client:
        assert wait(client) == 0, (tmp_path / "client.log").read_text()
        assert wait(server) == 0, (tmp_path / "ipi.log").read_text()[-2000:]
    frames = ipi.read_trajectory(str(tmp_path / "sim.pos_0.extxyz"))
    dip = ipi.read_trajectory(str(tmp_path / "sim.dipole_0"), format="extras")
    pol = ipi.read_trajectory(str(tmp_path / "sim.polarizability_0"), format="extras")
    calc = MLCalculator(dipole=model_file, polarizability=model_file)
    assert len(frames) == 11
    for i, frame in enumerate(frames):
        atoms = start.copy()
        atoms.positions = frame.positions
        np.testing.assert_allclose(dip["dipole"][i], calc.get_property("dipole", atoms) / BOHR, atol=1e-7)
        np.testing.assert_allclose(pol["polarizability"][i],
                                   calc.get_property("polarizability", atoms).ravel() / BOHR**3, atol=1e-6)
