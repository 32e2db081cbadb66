"""IR of a periodic cell: the spectrum of a box whose molecules drift across the wall while one of
them librates at a known frequency has its band there (the dipole of the package's convention is
continuous, so its time derivative is the polarization current); the point-charge dipole of the
wrapped atoms jumps and is refused naming the frames; a trajectory whose cell changes (NPT) needs
--cell-dipole, and 'polarization' scales by <V>/V."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.cli.parser import main
from mdplugin.core.errors import DataError
from mdplugin.spectra import ir_spectrum, read_series
from mdplugin.structures.molecules import molecular_dipole

DT = 2.0  # fs
N_FRAMES = 1500
WAVENUMBER = 700.0  # cm⁻¹ of the libration
C_CM_PER_FS = 2.99792458e-5


def _charges(n_molecules: int) -> np.ndarray:
    q = np.tile([-0.8, 0.4, 0.4], n_molecules)
    q += np.random.default_rng(0).normal(scale=0.02, size=q.size)  # net charges: wrapping shows
    return q - q.mean()


def _trajectory(wrapped_dipole: bool = False, breathing: float = 0.0, n_frames: int = N_FRAMES):
    """8 water molecules drifting together through a 6.2 Å box (each crosses the walls several
    times); molecule 0 librates about its centre at WAVENUMBER. Returns frames with dipoles in
    ``info``."""
    rng = np.random.default_rng(1)
    side = 6.2
    base, axes = [], []
    drift = np.array([0.004, -0.003, 0.002])  # Å/fs: about two cell lengths over the run
    for corner in np.array(np.meshgrid(*[[0.25, 0.75]] * 3)).reshape(3, -1).T:
        w = molecule("H2O")
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        base.append(w.positions - w.get_center_of_mass() + corner * side)
        axes.append(rng.normal(size=3))
    q = _charges(8)
    omega = 2 * np.pi * C_CM_PER_FS * WAVENUMBER  # rad/fs
    frames = []
    for k in range(n_frames):
        t = k * DT
        positions = []
        for m, (pos, axis) in enumerate(zip(base, axes)):
            w = Atoms("OH2", positions=pos)
            if m == 0:
                w.rotate(12.0 * np.sin(omega * t), axis, center="COM")
            positions.append(w.positions + drift * t)
        scale = 1.0 + breathing * np.sin(2 * np.pi * k / n_frames)
        atoms = Atoms("OH2" * 8, positions=np.concatenate(positions) * scale, cell=[side * scale] * 3, pbc=True)
        dipole = molecular_dipole(atoms, q)
        atoms.wrap()
        atoms.info["dipole"] = q @ atoms.positions if wrapped_dipole else dipole
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "box.xyz"
    ase.io.write(path, _trajectory(), format="extxyz")
    return path


def test_band_of_a_librating_molecule_in_a_drifting_box(drifting, tmp_path, capsys):
    mu = read_series(drifting, "dipole")
    result = ir_spectrum([mu], DT, temperature=300.0, depth=600.0)
    peaks = result.peaks(prominence=0.2)
    assert len(peaks) >= 1 and abs(peaks[0] - WAVENUMBER) < 15.0
    band = result.band_area("ir", WAVENUMBER - 100, WAVENUMBER + 100)
    total = result.band_area("ir", 50, 4000)
    assert band > 0.9 * total  # the drift across the walls adds nothing
    assert main(["spectrum", "ir", str(drifting), "--dt", str(DT), "--temperature", "300", "-o",
                 str(tmp_path / "ir.csv")]) == 0


def test_wrapped_point_charge_dipole_is_refused(tmp_path, capsys):
    path = tmp_path / "wrapped.xyz"
    ase.io.write(path, _trajectory(wrapped_dipole=True, n_frames=300), format="extxyz")
    with pytest.raises(DataError, match=r"wrapped.xyz: frames \d+ and \d+: the dipole jumps by .* continuous in time"):
        read_series(path, "dipole")
    assert main(["spectrum", "ir", str(path), "--dt", str(DT), "--temperature", "300", "-o",
                 str(tmp_path / "ir.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frames" in err[0] and "continuous" in err[0]


def test_changing_cell_needs_a_definition(tmp_path, capsys):
    path = tmp_path / "npt.xyz"
    frames = _trajectory(breathing=0.01, n_frames=200)
    ase.io.write(path, frames, format="extxyz")
    assert main(["spectrum", "ir", str(path), "--dt", str(DT), "--temperature", "300", "-o",
                 str(tmp_path / "ir.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cell changes" in err[0] and "--cell-dipole" in err[0]
    total = read_series(path, "dipole", cell_dipole="total")
    scaled = read_series(path, "dipole", cell_dipole="polarization")
    volumes = np.array([a.get_volume() for a in frames])
    np.testing.assert_allclose(total, [a.info["dipole"] for a in frames])
    np.testing.assert_allclose(scaled, total * (volumes.mean() / volumes)[:, None])
    assert main(["spectrum", "ir", str(path), "--dt", str(DT), "--temperature", "300", "--cell-dipole", "total",
                 "-o", str(tmp_path / "ir.csv")]) == 0
