"""A QM7b-like set the project builds itself (issue 27, point 4): small organic molecules of up to
7 heavy atoms of C, N, O, S, Cl with H (QM7b's composition), one 3-D structure each, GFN2-xTB labels
(dipole; polarizability by finite fields, :func:`mdplugin.oracles.label.make_oracle`).

No public QM7b file is reachable from this machine, so the molecules are enumerated here, by a fixed
and documented recipe (every step is deterministic):

1. **Scaffolds** (``SCAFFOLDS``): 66 small skeletons of 1–6 heavy atoms: chains, branched alkanes,
   alkenes/alkynes, 3- to 6-rings, saturated heterocycles, aromatics (benzene, pyridine, pyrroles,
   furan, thiophene, azoles, diazines), carbonyls, and one-atom cores (methane, ammonia, water,
   H2S) so that substituents also meet each other directly.
2. **Substituents** (``SUBSTITUENTS``): 28 functional groups of 1–3 heavy atoms with one attachment
   point: alkyls, vinyl, ethynyl, OH, OMe, NH2, NHMe, NMe2, SH, SMe, Cl, CHO, acetyl, COOH, ester,
   amide, nitrile, isocyanide, nitro, nitroso, formamido, methylsulfinyl, CH2Cl, ... .
3. **Enumeration**: every scaffold with one substituent on each symmetry-distinct heavy atom that
   carries a hydrogen, then with two substituents (every pair of such atoms, including twice on
   the same atom when it has two H; substituents from the same list), then three small ones
   (``SMALL``) on three atoms. A substituent replaces one H by a single bond.
4. **Sanity filters**: RDKit sanitisation (valences), neutral, no radical electrons (closed shell,
   even electron count), 1 ≤ heavy atoms ≤ 7, only H C N O S Cl; left out as unstable or
   unusual: a single bond between two non-aromatic, uncharged N/O atoms (peroxides, hydrazines,
   hydroxylamines), an sp3 carbon with a hydrogen and two or more N/O/S/Cl neighbours (aminals,
   hemiacetals), a 3-ring with more than one non-carbon atom; deduplication by canonical SMILES
   (stereo ignored). The recipe gives 13367 distinct molecules.
5. **Selection**: the unique SMILES (sorted) are ordered by a fixed random permutation (seed 0) and
   the first ``--n`` are kept. For ``--n 1600``: heavy-atom counts 1–7 of 1, 2, 10, 30, 129, 397,
   1031 molecules (weighted towards 7, like QM7b), 426 distinct formulas.
6. **3-D**: ETKDG v3 embedding (random seed 0xf00d) then an MMFF94 relaxation (RDKit); a molecule
   whose embedding or MMFF set-up fails is dropped.
7. **Labels**: GFN2-xTB (tblite) dipole and finite-field polarizability (±0.02 V/Å, six extra
   SCFs) per molecule; a molecule whose SCF fails is dropped and counted. Under
   ``mpiexec -n P`` the molecules are shared round-robin across ranks; each rank appends its
   labelled molecules to its own part file (flushed after each) so an interrupted run resumes.

Files (``--data DIR``, default ``/work/data/qm7like``): ``smiles.txt`` (index, SMILES, heavy
atoms), ``structures.xyz`` (MMFF geometries, ``smiles``/``index`` in the info), ``part-R.xyz``
(labelled, one per rank) and ``qm7like.xyz`` (all labelled molecules in index order, extended XYZ
with ``dipole`` (e·Å) and ``polarizability`` (Å³, row-major 9)), ``failed.txt``.

Usage:
    python benchmarks/qm7like.py smiles --n 1600        # enumerate, filter, select
    python benchmarks/qm7like.py embed                  # ETKDG + MMFF
    mpiexec -n 2 python benchmarks/qm7like.py label     # GFN2-xTB, resumable
    python benchmarks/qm7like.py merge                  # part files -> qm7like.xyz
Needs RDKit (the ``bench`` extra: ``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from itertools import combinations, combinations_with_replacement
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_DIR = Path("/work/data/qm7like")
ELEMENTS = {"H", "C", "N", "O", "S", "Cl"}
MAX_HEAVY = 7

SCAFFOLDS = [
    "C", "N", "O", "S",
    "CC", "C=C", "C#C", "C=O", "C=N", "C=S", "CO", "CN", "CS",
    "CCC", "CC=C", "CC#C", "C1CC1", "C1CO1", "C1CN1", "C1CS1", "CC=O", "CC#N", "C=CC", "COC", "CNC", "CSC",
    "CC(C)=O", "NC=O", "OC=O", "C=C=C",
    "CCCC", "CC(C)C", "C=CC=C", "C1CCC1", "C1COC1", "C1CNC1", "CC=CC", "CCOC", "O=C1CC1",
    "CCCCC", "CC(C)CC", "CC(C)(C)C", "C1CCCC1", "C1CCOC1", "C1CCNC1", "C1CCSC1", "c1ccoc1", "c1ccsc1",
    "c1cc[nH]c1", "c1cnc[nH]1", "c1cocn1", "c1cscn1", "c1cn[nH]c1", "O=C1CCC1", "C1=CCC=C1", "C1=CCCC1",
    "c1ccccc1", "c1ccncc1", "c1cnccn1", "c1ccnnc1", "c1cncnc1", "C1CCCCC1", "C1CCOCC1", "C1CCNCC1",
    "O=C1CCCC1", "C1=CCCCC1",
]

SUBSTITUENTS = [
    "*C", "*CC", "*C(C)C", "*CCC", "*C=C", "*C#C", "*O", "*OC", "*N", "*NC", "*N(C)C", "*S", "*SC",
    "*Cl", "*C=O", "*C(C)=O", "*C(=O)O", "*C(=O)OC", "*C(N)=O", "*C#N", "*[N+]#[C-]", "*[N+](=O)[O-]",
    "*N=O", "*NC=O", "*OC=O", "*CCl", "*CO", "*S(C)=O",
]

SMALL = ["*C", "*O", "*N", "*Cl", "*C#N", "*C=O", "*S"]


def _attach(mol, sites: tuple[int, ...], groups: tuple[str, ...]):
    """``mol`` with ``groups[i]`` (SMILES with ``*`` at the attachment) bonded to atom ``sites[i]``."""
    from rdkit import Chem

    rw = Chem.RWMol(mol)
    for n, site in enumerate(sites, start=1):
        dummy = Chem.Atom(0)
        dummy.SetAtomMapNum(n)
        d = rw.AddAtom(dummy)
        rw.AddBond(site, d, Chem.BondType.SINGLE)
        atom = rw.GetAtomWithIdx(site)
        if atom.GetNumExplicitHs() > 0:  # [nH]: the substituent takes the explicit H's place
            atom.SetNumExplicitHs(atom.GetNumExplicitHs() - 1)
    frags = [rw.GetMol()]
    for n, group in enumerate(groups, start=1):
        frags.append(Chem.MolFromSmiles(group.replace("*", f"[*:{n}]", 1)))
    combined = frags[0]
    for frag in frags[1:]:
        combined = Chem.CombineMols(combined, frag)
    out = Chem.molzip(combined)
    Chem.SanitizeMol(out)
    return out


def _h_sites(mol) -> list[int]:
    """One heavy atom per symmetry class among those carrying at least one hydrogen."""
    from rdkit import Chem

    ranks = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    seen, sites = set(), []
    for atom in mol.GetAtoms():
        if atom.GetTotalNumHs() > 0 and ranks[atom.GetIdx()] not in seen:
            seen.add(ranks[atom.GetIdx()])
            sites.append(atom.GetIdx())
    return sites


def sane(mol) -> bool:
    """The sanity filters of step 4 of the module docstring."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    heavy = mol.GetNumHeavyAtoms()
    if not 1 <= heavy <= MAX_HEAVY:
        return False
    if any(a.GetSymbol() not in ELEMENTS for a in mol.GetAtoms()):
        return False
    if Chem.GetFormalCharge(mol) != 0 or Descriptors.NumRadicalElectrons(mol) != 0:
        return False
    hetero = {7, 8, 16, 17}
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtom(), bond.GetEndAtom()
        if a.GetAtomicNum() in {7, 8} and b.GetAtomicNum() in {7, 8} and bond.GetBondType() == Chem.BondType.SINGLE:
            if not a.GetIsAromatic() and not b.GetIsAromatic() and a.GetFormalCharge() == 0 and b.GetFormalCharge() == 0:
                return False  # peroxides, hydrazines, hydroxylamines
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() == 6 and atom.GetHybridization() == Chem.HybridizationType.SP3:
            if sum(n.GetAtomicNum() in hetero for n in atom.GetNeighbors()) >= 2 and atom.GetTotalNumHs() > 0:
                return False  # aminals, hemiacetals, gem-dihalides with H: left out
    ring_info = mol.GetRingInfo()
    for ring in ring_info.AtomRings():
        if len(ring) == 3 and sum(mol.GetAtomWithIdx(i).GetAtomicNum() != 6 for i in ring) > 1:
            return False
    return True


def enumerate_smiles() -> dict[str, int]:
    """Canonical SMILES → heavy-atom count of every molecule the recipe makes."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    found: dict[str, int] = {}

    def keep(mol):
        if mol is not None and sane(mol):
            found.setdefault(Chem.MolToSmiles(mol, isomericSmiles=False), mol.GetNumHeavyAtoms())

    groups_heavy = {g: Chem.MolFromSmiles(g).GetNumHeavyAtoms() - 1 for g in SUBSTITUENTS}
    for core_smiles in SCAFFOLDS:
        core = Chem.MolFromSmiles(core_smiles)
        keep(core)
        sites = _h_sites(core)
        all_sites = [a.GetIdx() for a in core.GetAtoms() if a.GetTotalNumHs() > 0]
        n_core = core.GetNumHeavyAtoms()
        for site in sites:
            for g in SUBSTITUENTS:
                if n_core + groups_heavy[g] <= MAX_HEAVY:
                    keep(_try(_attach, core, (site,), (g,)))
        pairs = [p for p in combinations(all_sites, 2)]
        pairs += [(a, a) for a in all_sites if core.GetAtomWithIdx(a).GetTotalNumHs() >= 2]
        for pair in pairs:
            for g1, g2 in combinations_with_replacement(SUBSTITUENTS, 2):
                if n_core + groups_heavy[g1] + groups_heavy[g2] <= MAX_HEAVY:
                    keep(_try(_attach, core, pair, (g1, g2)))
        if n_core <= 4:
            for triple in combinations(all_sites, 3):
                for gs in combinations_with_replacement(SMALL, 3):
                    if n_core + sum(groups_heavy[g] for g in gs) <= MAX_HEAVY:
                        keep(_try(_attach, core, triple, gs))
    return found


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:  # RDKit raises several types for impossible valences
        return None


def select(found: dict[str, int], n: int, seed: int = 0) -> list[tuple[str, int]]:
    """The first ``n`` of a fixed random order of the SMILES (sorted first, so it is reproducible)."""
    items = sorted(found.items())
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order[:n]]


def cmd_smiles(args) -> None:
    start = time.perf_counter()
    found = enumerate_smiles()
    chosen = select(found, args.n)
    counts = np.bincount([h for _, h in chosen], minlength=MAX_HEAVY + 1)
    args.data.mkdir(parents=True, exist_ok=True)
    with open(args.data / "smiles.txt", "w") as fh:
        for i, (smi, heavy) in enumerate(chosen):
            fh.write(f"{i} {smi} {heavy}\n")
    print(f"{len(found)} unique molecules enumerated in {time.perf_counter() - start:.0f} s; "
          f"{len(chosen)} chosen; heavy-atom counts 1..7: {counts[1:].tolist()}")


def embed(smiles: str, seed: int = 0xF00D):
    """ETKDG v3 + MMFF94 structure (ase.Atoms) or None."""
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        return None
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        return None
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    pos = mol.GetConformer().GetPositions()
    return Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=pos - pos.mean(axis=0))


def cmd_embed(args) -> None:
    from ase.io import write

    frames, dropped = [], []
    for line in open(args.data / "smiles.txt"):
        idx, smi, _ = line.split()
        atoms = embed(smi)
        if atoms is None:
            dropped.append(smi)
            continue
        atoms.info.update(index=int(idx), smiles=smi)
        frames.append(atoms)
    write(args.data / "structures.xyz", frames, format="extxyz")
    print(f"{len(frames)} embedded, {len(dropped)} dropped: {' '.join(dropped)}")


def cmd_label(args) -> None:
    from ase.io import read

    from mdplugin.core.errors import OracleError
    from mdplugin.learn.parallel import get_comm
    from mdplugin.oracles.label import label_frames, make_oracle
    comm = get_comm()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    frames = read(args.data / "structures.xyz", ":", parallel=False)
    part = args.data / f"part-{rank}.xyz"
    done = set()
    for path in args.data.glob("part-*.xyz"):
        done |= {a.info["index"] for a in read(path, ":", parallel=False)} if path.stat().st_size else set()
    failed_path = args.data / f"failed-{rank}.txt"
    calc = make_oracle("tblite", threads=1)
    mine = [a for k, a in enumerate(frames) if k % size == rank and a.info["index"] not in done]
    start, n_done = time.perf_counter(), 0
    with open(part, "a") as fh, open(failed_path, "a") as ferr:
        for atoms in mine:
            try:
                data = label_frames([atoms], calc, properties=("dipole", "polarizability"))
            except OracleError as exc:
                ferr.write(f"{atoms.info['index']} {atoms.info['smiles']} {str(exc).splitlines()[0]}\n")
                ferr.flush()
                continue
            fh.write(_labelled_text(atoms, data.dipole[0], data.polarizability[0]))
            fh.flush()
            n_done += 1
            if n_done % 100 == 0 and rank == 0:
                print(f"rank 0: {n_done}/{len(mine)} in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"rank {rank}: labelled {n_done} molecules in {time.perf_counter() - start:.0f} s "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)


def _labelled_text(atoms, dipole, polarizability) -> str:
    """Extended XYZ of one labelled molecule, keeping its ``index`` and ``smiles``."""
    import io

    from ase import Atoms
    from ase.io import write

    out = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    out.info.update(index=int(atoms.info["index"]), smiles=atoms.info["smiles"],
                    dipole=np.asarray(dipole, dtype=float), polarizability=np.asarray(polarizability).reshape(9))
    buf = io.StringIO()
    write(buf, out, format="extxyz", parallel=False)
    return buf.getvalue()


def cmd_merge(args) -> None:
    from ase.io import read

    from mdplugin.core.atomicio import atomic_write
    from mdplugin.structures.data import read_dataset

    frames = [a for p in sorted(args.data.glob("part-*.xyz")) if p.stat().st_size for a in read(p, ":")]
    frames.sort(key=lambda a: a.info["index"])
    out = args.data / "qm7like.xyz"
    with atomic_write(out) as handle:
        for atoms in frames:
            # ASE's reader moves known properties (the dipole) into a SinglePointCalculator
            labels = {**(atoms.calc.results if atoms.calc is not None else {}), **atoms.info}
            handle.write(_labelled_text(atoms, labels["dipole"], labels["polarizability"]))
    data = read_dataset(out, properties=("dipole", "polarizability"))  # validates every frame
    failed = [line for p in sorted(args.data.glob("failed-*.txt")) for line in open(p)]
    (args.data / "failed.txt").write_text("".join(failed))
    print(f"{len(data.frames)} labelled molecules -> {out}; {len(failed)} failed")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("smiles", "embed", "label", "merge"))
    p.add_argument("--data", type=Path, default=DEFAULT_DIR, help=f"output folder (default {DEFAULT_DIR})")
    p.add_argument("--n", type=int, default=1600, help="molecules to select (step smiles)")
    args = p.parse_args(argv)
    {"smiles": cmd_smiles, "embed": cmd_embed, "label": cmd_label, "merge": cmd_merge}[args.step](args)


if __name__ == "__main__":
    main()
