"""Reference Hamiltonians with PySCF: self-consistent Fock and overlap matrices in an AO basis
(STO-3G by default), or a larger basis's Hamiltonian projected onto a minimal one.

``mdplugin label IN.xyz -o OUT.xyz --oracle pyscf --properties hamiltonian`` calls
:func:`label_hamiltonians` and writes ``OUT.hamiltonian.npz`` (format:
:mod:`mdplugin.structures.hamiltonians`). Each frame's total charge and spin (2S, unpaired
electrons) come from its ``charge`` and ``spin`` info keys (default 0); a frame with an odd number
of electrons must give its spin. Closed shells run restricted (RHF/RKS, one Fock matrix), open
shells unrestricted (UHF/UKS, α and β matrices).

Projection (``minimal_basis`` smaller than ``basis``): the SCF runs in ``basis``; its ``n_occ``
occupied and ``n_min - n_occ`` lowest virtual orbitals ``C`` are projected onto the minimal basis,
``A = S_mm⁻¹ S_mb C``; the occupied projections are made orthonormal among themselves (Löwdin), the
virtual ones orthogonal to them and then among themselves, giving ``Φ`` (n_min, n_min) with
``Φᵀ S_mm Φ = 1``; the stored matrix is ``H = S_mm Φ diag(ε) Φᵀ S_mm``. Its generalised
eigenvalues are the large basis's ``ε`` of the kept states exactly; its occupied space is the best
minimal-basis image of the large basis's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.linalg
from ase import Atoms

from ..core.errors import ConfigError, DataError, OracleError
from ..core.units import HARTREE
from ..learn.parallel import merge_rank_results
from ..structures.aobasis import AOBasis
from ..structures.hamiltonians import HamiltonianSet

DEFAULT_BASIS = "sto-3g"
DEFAULT_XC = "pbe0"
#: SCF energy convergence, Hartree (matrix elements then agree with the converged ones to ~1e-6 Ha)
CONV_TOL = 1e-10
#: two kept orbital energies closer than this (Hartree) at the edge of the kept virtual states
#: make the projection depend on an arbitrary choice within a degenerate level
DEGENERACY_TOL = 1e-5


def charge_and_spin(atoms: Atoms, where: str, charge: int | None = None, spin: int | None = None) -> tuple[int, int]:
    """Total charge and 2S of a frame: the arguments if given, else the frame's ``charge`` / ``spin``
    info (default 0 / unset). A :class:`DataError` naming ``where`` for an odd electron count
    without a spin, or a spin of the wrong parity."""
    info = getattr(atoms, "info", {}) or {}
    try:
        q = int(charge if charge is not None else round(float(info.get("charge", 0))))
        s = spin if spin is not None else info.get("spin")
        s = None if s is None else int(round(float(s)))
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'charge' and 'spin' must be whole numbers") from None
    n_electrons = int(np.sum(atoms.numbers)) - q
    if n_electrons <= 0:
        raise DataError(f"{where}: charge {q} leaves {n_electrons} electrons")
    if s is None:
        if n_electrons % 2:
            raise DataError(f"{where}: {atoms.get_chemical_formula()} with charge {q} has {n_electrons} electrons "
                            f"(odd) and no spin given: set spin=1 (unpaired electrons, 2S) in the frame's info")
        s = 0
    if s < 0 or (n_electrons - s) % 2:
        raise DataError(f"{where}: spin {s} (2S) is impossible with {n_electrons} electrons")
    return q, s


def _run_scf(atoms: Atoms, basis: str, xc: str, charge: int, spin: int, max_cycle: int, grid_level: int):
    from pyscf import dft, gto, scf

    mol = gto.M(atom=[(s, tuple(x)) for s, x in zip(atoms.get_chemical_symbols(), atoms.positions)],
                unit="Angstrom", basis=basis, charge=charge, spin=spin, verbose=0)
    if xc.lower() == "hf":
        mf = scf.RHF(mol) if spin == 0 else scf.UHF(mol)
    else:
        mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
        mf.xc = xc
        mf.grids.level = grid_level
    mf.conv_tol = CONV_TOL
    mf.max_cycle = max_cycle
    mf.kernel()
    if not mf.converged:
        raise OracleError(f"SCF did not converge in {max_cycle} cycles")
    return mol, mf


def project_hamiltonian(mol_small, mol_large, mo_coeff: np.ndarray, mo_energy: np.ndarray,
                        n_occ: int) -> tuple[np.ndarray, np.ndarray]:
    """The minimal-basis effective Hamiltonian of a large-basis closed-shell SCF (see the module
    docstring): ``(H (n, n), ε (n,))`` in the SCF's units, ``n = mol_small.nao``."""
    from pyscf import gto

    n = mol_small.nao
    if n_occ > n:
        raise OracleError(f"{n_occ} occupied orbitals do not fit in the {n} functions of the minimal basis")
    if n < len(mo_energy) and mo_energy[n] - mo_energy[n - 1] < DEGENERACY_TOL:
        raise OracleError(f"the {n - n_occ} kept virtual orbitals end inside a degenerate level "
                          f"(ε = {mo_energy[n - 1] * HARTREE:.4f} eV); the projection would break the symmetry")
    s_mm = mol_small.intor_symmetric("int1e_ovlp")
    s_mb = gto.intor_cross("int1e_ovlp", mol_small, mol_large)
    a = scipy.linalg.solve(s_mm, s_mb @ mo_coeff[:, :n], assume_a="pos")

    def lowdin(vectors: np.ndarray) -> np.ndarray:
        m = vectors.T @ s_mm @ vectors
        w, v = np.linalg.eigh(m)
        if w.min() < 1e-8 * max(w.max(), 1e-300):
            raise OracleError("projected orbitals are linearly dependent in the minimal basis")
        return vectors @ (v / np.sqrt(w)) @ v.T

    occ = lowdin(a[:, :n_occ])
    virt = a[:, n_occ:]
    if virt.shape[1]:
        virt = lowdin(virt - occ @ (occ.T @ s_mm @ virt))
    phi = np.hstack([occ, virt])
    eps = np.asarray(mo_energy[:n], dtype=float)
    h = s_mm @ (phi * eps) @ phi.T @ s_mm
    return 0.5 * (h + h.T), eps


def hamiltonian_of(atoms: Atoms, charge: int = 0, spin: int = 0, *, basis: str = DEFAULT_BASIS,
                   xc: str = DEFAULT_XC, minimal_basis: str | None = None, max_cycle: int = 100,
                   grid_level: int = 3) -> dict[str, np.ndarray]:
    """PySCF SCF of one molecule and its AO matrices (eV): ``fock`` (n_spin, n, n), ``overlap``
    (n, n), ``mo_energy`` (n_spin, n), ``ao_atom`` (n,), ``ao_label`` (n,), ``scf_energy`` ().

    ``minimal_basis`` (a basis with fewer functions than ``basis``) gives the projected
    Hamiltonian in that basis instead of the Fock matrix in ``basis`` (closed shells only).
    """
    if atoms.pbc.any():
        raise OracleError("PySCF Hamiltonians are for isolated molecules (the frame is periodic)")
    mol, mf = _run_scf(atoms, basis, xc, charge, spin, max_cycle, grid_level)
    if minimal_basis is None or minimal_basis.lower() == basis.lower():
        fock = np.asarray(mf.get_fock()).reshape(-1, mol.nao, mol.nao)
        overlap = mf.get_ovlp()
        out_mol = mol
    else:
        if spin:
            raise OracleError("projected Hamiltonians are for closed shells (spin 0)")
        out_mol = AOBasis(minimal_basis).molecule(atoms.numbers, atoms.positions)
        fock, _ = project_hamiltonian(out_mol, mol, mf.mo_coeff, mf.mo_energy, mol.nelectron // 2)
        fock = fock[None]
        overlap = out_mol.intor_symmetric("int1e_ovlp")
    fock = 0.5 * (fock + fock.transpose(0, 2, 1))
    mo_energy = np.array([scipy.linalg.eigh(f, overlap, eigvals_only=True) for f in fock])
    aoslices = out_mol.aoslice_by_atom()
    ao_atom = np.repeat(np.arange(len(atoms)), aoslices[:, 3] - aoslices[:, 2])
    labels = np.array([" ".join(x.split()) for x in out_mol.ao_labels()])
    return {"fock": fock * HARTREE, "overlap": overlap, "mo_energy": mo_energy * HARTREE,
            "ao_atom": ao_atom, "ao_label": labels, "scf_energy": np.float64(mf.e_tot * HARTREE)}


def label_hamiltonians(frames: Sequence[Atoms], *, basis: str = DEFAULT_BASIS, xc: str = DEFAULT_XC,
                       minimal_basis: str | None = None, charges: Sequence[int] | None = None,
                       spins: Sequence[int | None] | None = None, progress: bool = False, comm=None,
                       source: str = "<memory>") -> HamiltonianSet:
    """AO Hamiltonians of every frame, in input order (:func:`hamiltonian_of`).

    ``charges``/``spins`` override the frames' ``charge``/``spin`` info. ``comm`` (mpi4py-like)
    shares the frames out round-robin; every rank returns the whole set. Raises
    :class:`ConfigError` for a basis or element PySCF does not know, :class:`DataError` for an
    odd-electron frame without a spin, :class:`OracleError` naming the frame whose SCF failed.
    """
    where = (lambda i: f"frame {i}") if source == "<memory>" else (lambda i: f"{source}: frame {i}")
    elements = sorted({int(z) for a in frames for z in a.numbers})
    for name in [basis] + ([minimal_basis] if minimal_basis else []):
        b = AOBasis(name)
        for z in elements:
            b.shells(z)  # ConfigError: unknown basis or element
    cs = [charge_and_spin(a, where(i), None if charges is None else charges[i],
                          None if spins is None else spins[i]) for i, a in enumerate(frames)]
    if minimal_basis and minimal_basis.lower() != basis.lower():
        small, large = AOBasis(minimal_basis), AOBasis(basis)
        for i, a in enumerate(frames):
            if small.n_ao(a.numbers) >= large.n_ao(a.numbers):
                raise ConfigError(f"minimal basis {minimal_basis!r} is not smaller than {basis!r} "
                                  f"({a.get_chemical_formula()}: {small.n_ao(a.numbers)} vs {large.n_ao(a.numbers)} functions)")
            break
    if comm is not None and comm.Get_size() == 1:
        comm = None
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    from tqdm.auto import tqdm

    local: dict[int, dict] = {}
    error = None
    mine = range(rank, len(frames), size)
    with tqdm(total=len(mine), desc="hamiltonian", unit="frame", disable=not progress or rank != 0,
              leave=False) as bar:
        for i in mine:
            try:
                local[i] = hamiltonian_of(frames[i], *cs[i], basis=basis, xc=xc, minimal_basis=minimal_basis)
            except Exception as exc:  # SCF failures come as many types
                msg = " ".join(str(exc).split()) or type(exc).__name__
                error = f"{where(i)}: pyscf ({xc}/{basis}) failed: {msg}"
                if comm is None:
                    raise OracleError(error) from exc
                break
            bar.update(1)
    local = merge_rank_results(comm, local, error, OracleError)
    rec = [local[i] for i in range(len(frames))]
    return HamiltonianSet(
        basis=minimal_basis or basis, method=xc.lower(), fock=[r["fock"] for r in rec],
        overlap=[r["overlap"] for r in rec], mo_energy=[r["mo_energy"] for r in rec],
        ao_atom=[r["ao_atom"] for r in rec], ao_label=[r["ao_label"] for r in rec],
        numbers=[np.asarray(a.numbers) for a in frames], positions=[np.array(a.positions) for a in frames],
        charge=np.array([c for c, _ in cs], dtype=int),
        spin=np.array([s for _, s in cs], dtype=int), scf_energy=np.array([r["scf_energy"] for r in rec]),
        scf_basis=basis, source=source)
