"""PySCF reference Hamiltonians: the stored matrices give back PySCF's orbitals and dipole, the
projected ones keep the large basis's orbital energies and occupied space; `mdplugin label
--properties hamiltonian` end to end, under mpiexec too; bad input in one line."""

from __future__ import annotations

import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.cli.parser import main
from mdplugin.core.errors import ConfigError, DataError, OracleError
from mdplugin.core.orbitals import dipole, orbitals
from mdplugin.core.units import BOHR, HARTREE
from mdplugin.structures.aobasis import AOBasis
from mdplugin.structures.data import read_dataset
from mdplugin.structures.hamiltonians import read_hamiltonians

from ..support.mpi_utils import mpiexec_path

pytest.importorskip("pyscf")
from mdplugin.oracles.hamiltonian import label_hamiltonians  # noqa: E402


def _scf(atoms, basis, spin=0):
    from pyscf import gto, scf

    mol = gto.M(atom=[(s, tuple(x)) for s, x in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis=basis, spin=spin, verbose=0)
    mf = scf.RHF(mol) if spin == 0 else scf.UHF(mol)
    mf.conv_tol = 1e-11
    mf.kernel()
    return mol, mf


def _distorted(name, seed):
    atoms = molecule(name)
    atoms.positions += np.random.default_rng(seed).normal(scale=0.04, size=atoms.positions.shape)
    return atoms


def test_fock_gives_pyscfs_orbitals_and_dipole():
    frames = [_distorted("H2O", 0), _distorted("CH3OH", 1)]
    data = label_hamiltonians(frames, xc="hf")
    for atoms, fock, s, eps in zip(frames, data.fock, data.overlap, data.mo_energy):
        mol, mf = _scf(atoms, "sto-3g")
        np.testing.assert_allclose(eps[0], mf.mo_energy * HARTREE, atol=1e-5)
        e, c = orbitals(fock[0], s)
        with mol.with_common_orig((0, 0, 0)):
            mu = mf.dip_moment(unit="au", verbose=0) * BOHR
        r = AOBasis("sto-3g").dipole_integrals(atoms.numbers, atoms.positions)
        np.testing.assert_allclose(dipole(c, mol.nelectron // 2, r, atoms.numbers, atoms.positions), mu, atol=1e-6)
    assert data.method == "hf" and data.basis == "sto-3g" and not data.projected
    assert list(data.ao_label[0]) == ["0 O 1s", "0 O 2s", "0 O 2px", "0 O 2py", "0 O 2pz", "1 H 1s", "2 H 1s"]


def test_projected_hamiltonian_keeps_orbital_energies_and_occupied_space():
    atoms = _distorted("H2O", 2)
    data = label_hamiltonians([atoms], xc="hf", basis="def2-svp", minimal_basis="sto-3g")
    assert data.projected and data.basis == "sto-3g" and data.scf_basis == "def2-svp"
    mol_big, mf = _scf(atoms, "def2-svp")
    h, s = data.fock[0][0], data.overlap[0]
    eps, c = orbitals(h, s)
    np.testing.assert_allclose(eps, mf.mo_energy[:7] * HARTREE, atol=1e-6)
    # the occupied orbitals of H span the minimal-basis projection of the large basis's ones
    from pyscf import gto

    small = AOBasis("sto-3g").molecule(atoms.numbers, atoms.positions)
    proj = np.linalg.solve(s, gto.intor_cross("int1e_ovlp", small, mol_big) @ mf.mo_coeff[:, :5])
    both = np.hstack([c[:, :5], proj])
    sv = np.linalg.svd(both, compute_uv=False)
    assert sv[5] < 1e-5 * sv[0]  # equal spans up to the SCF convergence (a different span: ~0.1)


def test_open_shell_needs_a_spin_and_gets_two_matrices():
    oh = molecule("OH")
    with pytest.raises(DataError, match="frame 0: HO with charge 0 has 9 electrons .odd. and no spin given"):
        label_hamiltonians([oh], xc="hf")
    oh.info["spin"] = 1
    data = label_hamiltonians([oh], xc="hf")
    _, mf = _scf(oh, "sto-3g", spin=1)
    assert data.fock[0].shape == (2, 6, 6)
    np.testing.assert_allclose(data.mo_energy[0], np.asarray(mf.mo_energy) * HARTREE, atol=1e-5)
    oh.info["spin"] = 2
    with pytest.raises(DataError, match="spin 2 .2S. is impossible with 9 electrons"):
        label_hamiltonians([oh], xc="hf")


def test_bad_input():
    with pytest.raises(ConfigError, match="basis 'nonsense-basis' is not known to PySCF"):
        label_hamiltonians([molecule("H2O")], basis="nonsense-basis")
    with pytest.raises(ConfigError, match="not smaller than"):
        label_hamiltonians([molecule("H2O")], basis="sto-3g", minimal_basis="def2-svp")
    box = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[5, 5, 5], pbc=True)
    with pytest.raises(OracleError, match="frame 0: .*isolated molecules"):
        label_hamiltonians([box], xc="hf")


def _one_line_error(capsys, args, *fragments):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mdplugin: error:"), err
    for fragment in fragments:
        assert fragment in err[0]


def test_label_command(tmp_path, capsys):
    frames = [_distorted("H2O", 3), _distorted("CH4", 4)]
    frames[1].info["charge"] = 0
    path, out = tmp_path / "in.xyz", tmp_path / "out.xyz"
    ase.io.write(path, frames)
    assert main(["label", str(path), "-o", str(out), "--oracle", "pyscf", "--properties", "hamiltonian,dipole",
                 "--xc", "hf", "--quiet"]) == 0
    data = read_dataset(out)
    ham = read_hamiltonians(tmp_path / "out.hamiltonian.npz", data.frames)
    for atoms, fock, s, mu in zip(data.frames, ham.fock, ham.overlap, data.dipole):  # one method for both
        _, c = orbitals(fock[0], s)
        r = AOBasis("sto-3g").dipole_integrals(atoms.numbers, atoms.positions)
        np.testing.assert_allclose(dipole(c, int(atoms.numbers.sum()) // 2, r, atoms.numbers, atoms.positions),
                                   mu, atol=1e-5)
    odd = tmp_path / "odd.xyz"
    ase.io.write(odd, [molecule("H2O"), molecule("OH")])
    _one_line_error(capsys, ["label", str(odd), "-o", str(tmp_path / "o.xyz"), "--oracle", "pyscf",
                             "--properties", "hamiltonian"], "odd.xyz: frame 1", "no spin given")
    _one_line_error(capsys, ["label", str(path), "-o", str(tmp_path / "o.xyz"), "--oracle", "pyscf",
                             "--properties", "hamiltonian", "--basis", "sto-99"], "basis 'sto-99' is not known to PySCF")
    _one_line_error(capsys, ["label", str(path), "-o", str(tmp_path / "o.xyz"), "--properties", "hamiltonian"],
                    "use --oracle pyscf")
    assert not (tmp_path / "o.xyz").exists() and not (tmp_path / "o.hamiltonian.npz").exists()


def test_label_hamiltonians_under_mpi_match_serial(tmp_path):
    mpiexec = mpiexec_path()
    frames = [_distorted("H2O", k) for k in range(3)]
    path = tmp_path / "in.xyz"
    ase.io.write(path, frames)
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "mdplugin", "label", str(path), "-o",
                           str(tmp_path / "out.xyz"), "--oracle", "pyscf", "--properties", "hamiltonian", "--xc", "hf",
                           "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ham = read_hamiltonians(tmp_path / "out.hamiltonian.npz", ase.io.read(tmp_path / "out.xyz", ":"))
    serial = label_hamiltonians(frames, xc="hf")
    for a, b in zip(ham.fock, serial.fock):
        np.testing.assert_allclose(a, b, atol=1e-6)
