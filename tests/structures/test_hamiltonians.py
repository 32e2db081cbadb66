"""Hamiltonian files: round trip, checks against the structures, no pickles."""

import numpy as np
import pytest
from ase.build import molecule

from mdplugin.core.errors import DataError
from mdplugin.structures.hamiltonians import (HamiltonianSet, hamiltonian_path, read_hamiltonians,
                                              write_hamiltonians)


def _set(frames):
    rng = np.random.default_rng(0)
    fock, overlap, eps, ao_atom, labels = [], [], [], [], []
    for atoms in frames:
        n = 2 * len(atoms)
        a = rng.normal(size=(n, n))
        fock.append((a + a.T)[None])
        overlap.append(np.eye(n))
        eps.append(np.sort(rng.normal(size=(1, n))))
        ao_atom.append(np.repeat(np.arange(len(atoms)), 2))
        labels.append(np.array([f"{k // 2} X {k}s" for k in range(n)]))
    return HamiltonianSet(basis="sto-3g", method="hf", fock=fock, overlap=overlap, mo_energy=eps, ao_atom=ao_atom,
                          ao_label=labels, numbers=[a.numbers.copy() for a in frames],
                          positions=[a.positions.copy() for a in frames], charge=np.zeros(len(frames), int),
                          spin=np.zeros(len(frames), int), scf_energy=np.arange(len(frames), dtype=float),
                          scf_basis="sto-3g")


def test_round_trip(tmp_path):
    frames = [molecule("H2O"), molecule("CH3CH2OH"), molecule("NH3")]
    data = _set(frames)
    path = tmp_path / "x.hamiltonian.npz"
    write_hamiltonians(path, data)
    back = read_hamiltonians(path, frames)
    assert back.basis == "sto-3g" and not back.projected and len(back) == 3
    for a, b in zip(data.fock + data.overlap + data.mo_energy, back.fock + back.overlap + back.mo_energy):
        np.testing.assert_array_equal(a, b)
    assert list(back.ao_label[1][:2]) == ["0 X 0s", "0 X 1s"]
    sub = back.subset([2, 0])
    assert [len(z) for z in sub.numbers] == [4, 3] and sub.scf_energy.tolist() == [2.0, 0.0]
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only
        assert all(npz[k].dtype != object for k in npz.files)


def test_mismatches_are_named(tmp_path):
    frames = [molecule("H2O"), molecule("NH3")]
    path = tmp_path / "x.hamiltonian.npz"
    write_hamiltonians(path, _set(frames))
    with pytest.raises(DataError, match="holds 2 frames but the structures have 1"):
        read_hamiltonians(path, frames[:1])
    with pytest.raises(DataError, match="frame 1: atoms differ"):
        read_hamiltonians(path, [frames[0], molecule("CH4")])
    moved = frames[1].copy()
    moved.positions[0, 0] += 0.01
    with pytest.raises(DataError, match="frame 1: positions differ .* by up to 0.01 Å"):
        read_hamiltonians(path, [frames[0], moved])
    with pytest.raises(DataError, match="no such Hamiltonian file"):
        read_hamiltonians(tmp_path / "nothere.npz")
    (tmp_path / "bad.npz").write_text("hello")
    with pytest.raises(DataError, match="not a Hamiltonian file"):
        read_hamiltonians(tmp_path / "bad.npz")


def test_path_beside_the_xyz():
    assert str(hamiltonian_path("run/out.xyz")) == "run/out.hamiltonian.npz"
    assert str(hamiltonian_path("out")) == "out.hamiltonian.npz"
