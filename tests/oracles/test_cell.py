"""The reference labels of a periodic cell, with real GFN2-xTB (tblite) on boxes of 2-4 water
molecules: the dipole does not depend on the origin or on wrapping and stays continuous when an
atom crosses the wall (tblite's own dipole does not); energy, forces, stress, dipole and
polarizability rotate with the cell (rotations and reflections); forces and stress are finite
differences of the energy; the cluster polarizability is a molecular one (a lone molecule in a
cell gets its gas-phase value; a liquid box about 0.3 Å³ per molecule, not the ~7 Å³ of a field
on the cell); `mpiexec -n 2 mdplugin label` on a box equals the serial labels."""

from __future__ import annotations

import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import all_changes

from mdplugin.core.tensors import random_rotation
from mdplugin.oracles.label import label_frames, make_oracle, tblite_factory
from mdplugin.structures.data import read_dataset

from ..support.mpi_utils import mpiexec_path

ALL = ["energy", "forces", "dipole", "polarizability"]


def small_box(n_molecules: int = 2, seed: int = 0) -> Atoms:
    """``n_molecules`` water molecules at liquid density in a periodic cube, randomly placed
    without overlaps (centres at least 2.6 Å apart, images included)."""
    rng = np.random.default_rng(seed)
    side = (n_molecules * 18.015 / 0.997 / 0.60221) ** (1 / 3)
    centres: list[np.ndarray] = []
    while len(centres) < n_molecules:
        c = rng.uniform(0, side, 3)
        if all(np.linalg.norm((c - o + side / 2) % side - side / 2) > 2.6 for o in centres):
            centres.append(c)
    positions = []
    for c in centres:
        w = molecule("H2O")
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        positions.append(w.positions - w.get_center_of_mass() + c)
    atoms = Atoms("OH2" * n_molecules, positions=np.concatenate(positions), cell=[side] * 3, pbc=True)
    atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
    return atoms


def labels(atoms: Atoms, props=("energy", "forces", "stress", "dipole")) -> dict:
    calc = make_oracle("tblite")
    calc.calculate(atoms, [p for p in props if p != "stress"], all_changes)
    out = dict(calc.results)
    if "stress" in props:
        base = tblite_factory()(None)
        base.calculate(atoms, ["stress"], all_changes)
        out["stress"] = base.results["stress"]
    return out


def raw_tblite_dipole(atoms: Atoms) -> np.ndarray:
    from tblite.ase import TBLite

    calc = TBLite(method="GFN2-xTB", verbosity=0, accuracy=0.01)
    calc.calculate(atoms, ["dipole"], all_changes)
    return calc.results["dipole"]


@pytest.fixture(scope="module")
def box() -> tuple[Atoms, dict]:
    atoms = small_box(n_molecules=2, seed=1)
    return atoms, labels(atoms, ("energy", "forces", "stress", "dipole", "polarizability"))


def test_dipole_does_not_depend_on_origin_or_wrapping(box):
    atoms, ref = box
    moved = atoms.copy()
    moved.positions += 0.5 * moved.cell.sum(axis=0) + [0.11, -0.07, 0.05]
    moved.wrap()
    got = labels(moved, ("energy", "forces", "dipole"))
    assert got["energy"] == pytest.approx(ref["energy"], abs=1e-5)
    np.testing.assert_allclose(got["forces"], ref["forces"], atol=1e-4)
    np.testing.assert_allclose(got["dipole"], ref["dipole"], atol=1e-5)
    # tblite's own dipole of the wrapped atoms changes by charges × cell vectors
    assert np.abs(raw_tblite_dipole(moved) - raw_tblite_dipole(atoms)).max() > 0.1


def test_dipole_is_continuous_when_a_hydrogen_crosses_the_wall():
    atoms = small_box(n_molecules=2, seed=2)
    atoms.wrap()
    h = 1 + int(np.argmax(atoms.positions[[1, 2], 0]))  # the H of molecule 0 nearest the +x wall
    start = atoms.cell[0, 0] - atoms.positions[h, 0] - 0.06
    steps = start + np.arange(4) * 0.04  # it crosses the wall between the second and third step
    ours, raw = [], []
    for s in steps:
        frame = atoms.copy()
        frame.positions[[0, 1, 2], 0] += s  # molecule 0 moves along x ...
        frame.positions[h, 1] += 0.5 * (s - start)  # ... its H swings a little ...
        frame.positions[3, 2] += 0.3 * (s - start)  # ... and the other molecule moves too
        frame.wrap()
        ours.append(labels(frame, ("dipole",))["dipole"])
        raw.append(raw_tblite_dipole(frame))
    ours, raw = np.array(ours), np.array(raw)
    d_ours = np.linalg.norm(np.diff(ours, axis=0), axis=1)
    d_raw = np.linalg.norm(np.diff(raw, axis=0), axis=1)
    assert d_ours.max() < 0.1  # e·Å for 0.04 Å steps
    assert d_ours.max() < 2.5 * np.median(d_ours) + 1e-3  # no step stands out
    assert d_raw.max() > 0.5  # tblite's own dipole jumps by q_H × a at the wall


@pytest.mark.parametrize("reflection", [False, True])
def test_labels_rotate_with_the_cell(box, reflection):
    atoms, ref = box
    rot = random_rotation(np.random.default_rng(11 + reflection), reflection=reflection)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    turned.positions = atoms.positions @ rot.T
    got = labels(turned, ("energy", "forces", "stress", "dipole", "polarizability"))
    assert got["energy"] == pytest.approx(ref["energy"], abs=1e-5)
    np.testing.assert_allclose(got["forces"], ref["forces"] @ rot.T, atol=1e-4)
    np.testing.assert_allclose(got["dipole"], rot @ ref["dipole"], atol=1e-5)
    np.testing.assert_allclose(got["polarizability"], rot @ ref["polarizability"] @ rot.T, atol=2e-4)
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]

    def full(s):
        m = np.zeros((3, 3))
        for k, (i, j) in enumerate(voigt):
            m[i, j] = m[j, i] = s[k]
        return m

    np.testing.assert_allclose(full(got["stress"]), rot @ full(ref["stress"]) @ rot.T, atol=1e-5)


def test_forces_and_stress_are_energy_derivatives(box):
    atoms, ref = box
    d = 1e-3

    def energy(a):
        return labels(a, ("energy",))["energy"]

    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[2, 1] += d
    minus.positions[2, 1] -= d
    assert ref["forces"][2, 1] == pytest.approx(-(energy(plus) - energy(minus)) / (2 * d), abs=2e-3)
    eps = 1e-3  # strain xx: σ_xx = (1/V) dE/dε_xx
    strained = []
    for s in (eps, -eps):
        a = atoms.copy()
        a.set_cell(atoms.cell.array @ (np.eye(3) + np.diag([s, 0, 0])), scale_atoms=True)
        strained.append(energy(a))
    assert ref["stress"][0] == pytest.approx((strained[0] - strained[1]) / (2 * eps) / atoms.get_volume(), abs=2e-4)


def test_lone_molecule_in_a_cell_has_its_gas_phase_polarizability():
    w = molecule("H2O")
    w.positions += 0.1 * np.array([1.0, 2.0, 3.0])
    free = label_frames([w], "tblite", ["polarizability"]).polarizability[0]
    cell = w.copy()
    cell.cell = [11.0, 11.5, 12.0]  # images 11 Å away: outside the 4 Å cluster
    cell.pbc = True
    cell.wrap()
    got = label_frames([cell], "tblite", ["polarizability"]).polarizability[0]
    np.testing.assert_allclose(got, free, atol=1e-5)


def test_liquid_box_polarizability_is_molecular():
    atoms = small_box(n_molecules=4, seed=3)
    alpha = label_frames([atoms], "tblite", ["polarizability"]).polarizability[0]
    per_molecule = np.trace(alpha) / 3 / 4
    assert 0.2 < per_molecule < 0.45  # Å³ (GFN2-xTB gas phase: 0.37; a field on the cell gives ~7)
    assert np.all(np.linalg.eigvalsh(alpha) > 0)


def test_label_of_a_box_under_mpi_matches_serial(tmp_path):
    mpiexec = mpiexec_path()
    frames = [small_box(n_molecules=2, seed=s) for s in (4, 5)]
    path = tmp_path / "boxes.xyz"
    ase.io.write(path, frames, format="extxyz")
    out = tmp_path / "labelled.xyz"
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "mdplugin", "label", str(path), "-o", str(out),
                           "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = read_dataset(out)
    assert data.properties == ALL and len(data) == 2 and all(a.pbc.all() for a in data.frames)
    serial = label_frames(frames, "tblite", ALL)
    np.testing.assert_allclose(data.energy, serial.energy, atol=1e-5)
    np.testing.assert_allclose(data.dipole, serial.dipole, atol=1e-5)
    np.testing.assert_allclose(data.polarizability, serial.polarizability, atol=1e-5)
    for a, b in zip(data.forces, serial.forces):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_crystal_gets_energy_and_forces_but_no_molecular_dipole():
    from ase.build import bulk

    from mdplugin.core.errors import OracleError

    crystal = bulk("Si", "diamond", a=5.43)
    crystal.positions[0] += [0.05, 0.0, -0.03]
    data = label_frames([crystal], "tblite", ["energy", "forces"])
    assert np.isfinite(data.energy[0]) and np.abs(data.forces[0]).max() > 1e-3
    with pytest.raises(OracleError, match=r"frame 0: .*bonded to its own periodic image"):
        label_frames([crystal], "tblite", ["dipole"])
