"""AO bases: PySCF's own Fock and overlap matrices rotate, reflect and permute with the AO matrices."""

import numpy as np
import pytest
from ase.build import molecule

from mdplugin.core.errors import ConfigError
from mdplugin.core.tensors import random_rotation
from mdplugin.structures.aobasis import AOBasis, pyscf_to_real

pyscf = pytest.importorskip("pyscf")


def _fock(atoms, basis):
    from pyscf import gto, scf

    mol = gto.M(atom=[(s, tuple(x)) for s, x in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis=basis, verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-12
    mf.kernel()
    return mf.get_fock(), mf.get_ovlp()


@pytest.mark.parametrize("basis", ["sto-3g", "def2-svp"])  # def2-svp: d shells on O and C
def test_rotation_and_reflection_of_scf_matrices(basis):
    atoms = molecule("CH3OH")
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    f, s = _fock(atoms, basis)
    aob = AOBasis(basis)
    for seed, reflection in [(1, False), (2, True)]:
        r = random_rotation(seed, reflection=reflection)
        moved = atoms.copy()
        moved.positions = atoms.positions @ r.T
        f2, s2 = _fock(moved, basis)
        d = aob.rotation_matrix(atoms.numbers, r)
        np.testing.assert_allclose(d @ d.T, np.eye(len(d)), atol=1e-12)
        np.testing.assert_allclose(d @ s @ d.T, s2, atol=1e-10)
        np.testing.assert_allclose(d @ f @ d.T, f2, atol=2e-6)


def test_permutation_and_overlap():
    atoms = molecule("H2O")
    f, s = _fock(atoms, "sto-3g")
    aob = AOBasis("sto-3g")
    np.testing.assert_allclose(aob.overlap(atoms.numbers, atoms.positions), s, atol=1e-14)
    order = [2, 0, 1]
    p = aob.permutation_matrix(atoms.numbers, order)
    f2, s2 = _fock(atoms[order], "sto-3g")
    np.testing.assert_allclose(p @ f @ p.T, f2, atol=2e-6)
    np.testing.assert_allclose(p @ s @ p.T, s2, atol=1e-12)
    # the kept Mole moves with the structure
    moved = atoms.positions + 0.3
    np.testing.assert_allclose(aob.overlap(atoms.numbers, moved), s, atol=1e-12)
    r = aob.dipole_integrals(atoms.numbers, moved) - aob.dipole_integrals(atoms.numbers, atoms.positions)
    np.testing.assert_allclose(r, 0.3 * s[None].repeat(3, 0), atol=1e-10)


def test_layout_and_shells():
    aob = AOBasis("def2-svp")
    assert aob.shells(8) == (0, 0, 0, 1, 1, 2)
    lay = aob.layout([8, 1])
    assert lay.n_ao == 14 + 5 and list(lay.ao_atom[-5:]) == [1] * 5
    assert [s.stop - s.start for s in lay.atom_slices(2)] == [14, 5]
    np.testing.assert_allclose(pyscf_to_real(1), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-12)  # p: (x, y, z)


def test_unknown_basis_and_element():
    with pytest.raises(ConfigError, match="basis 'sto-99x' is not known to PySCF"):
        AOBasis("sto-99x").shells(1)
    with pytest.raises(ConfigError, match="no functions for element U"):
        AOBasis("sto-3g").shells(92)
