"""The QM7b-like set's recipe (benchmarks/qm7like.py, issue 27 point 4): the sanity filters keep
closed-shell neutral molecules of ≤ 7 heavy atoms of C, N, O, S, Cl and leave out the rest;
substituents go on symmetry-distinct positions (also on an aromatic [nH]); structures are 3-D with
sensible bonds. Needs RDKit (the ``bench`` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

Chem = pytest.importorskip("rdkit.Chem")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "qm7like.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("qm7like_recipe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("smiles", ["CCO", "c1cc[nH]c1", "C[N+](=O)[O-]", "ClC(Cl)=O", "CSC(=O)N", "C1CCCCC1C"])
def test_sane_molecules_are_kept(recipe, smiles):
    assert recipe.sane(Chem.MolFromSmiles(smiles))


@pytest.mark.parametrize("smiles, why", [
    ("[CH3]", "radical"), ("[NH4+]", "charged"), ("CCCCCCCC", "8 heavy atoms"), ("CF", "fluorine"),
    ("COOC", "peroxide"), ("NN", "hydrazine"), ("CC(N)N", "aminal carbon"), ("OC(O)C", "hemiacetal-like"),
    ("C1NO1", "3-ring with two heteroatoms"), ("C[Si](C)C", "silicon"),
])
def test_unstable_or_foreign_molecules_are_left_out(recipe, smiles, why):
    assert not recipe.sane(Chem.MolFromSmiles(smiles)), why


def test_substituents_go_on_symmetry_distinct_positions(recipe):
    assert len(recipe._h_sites(Chem.MolFromSmiles("c1ccccc1"))) == 1
    assert len(recipe._h_sites(Chem.MolFromSmiles("Cc1ccccc1"))) == 4  # methyl, ortho, meta, para
    pyrrole = Chem.MolFromSmiles("c1cc[nH]c1")
    nitrogen = next(a.GetIdx() for a in pyrrole.GetAtoms() if a.GetSymbol() == "N")
    product = recipe._attach(pyrrole, (nitrogen,), ("*C",))
    assert Chem.MolToSmiles(product) == Chem.MolToSmiles(Chem.MolFromSmiles("Cn1cccc1"))
    two = recipe._attach(Chem.MolFromSmiles("CC"), (0, 1), ("*O", "*Cl"))
    assert Chem.MolToSmiles(two) == Chem.MolToSmiles(Chem.MolFromSmiles("OCCCl"))


def test_structures_are_three_dimensional_with_sensible_bonds(recipe):
    atoms = recipe.embed("CC(=O)NC1CC1")
    assert atoms.get_chemical_formula() == "C5H9NO"
    assert np.linalg.svd(atoms.positions - atoms.positions.mean(0), compute_uv=False)[2] > 0.3  # not planar
    d = atoms.get_all_distances()
    np.fill_diagonal(d, np.inf)
    assert 0.95 < d.min() < 1.12  # the shortest bonds are X–H
    heavy = [i for i, z in enumerate(atoms.numbers) if z > 1]
    assert d[np.ix_(heavy, heavy)].min() > 1.15  # C=O ≈ 1.22 Å, no clashes
