"""LODE and multi-scale features: covariance, translation invariance, known answers, featomic's coupling."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.core.errors import DataError
from mdplugin.core.tensors import random_rotation, wigner_d_real
from mdplugin.features.lode import LodeFeaturizer, couple, dense_expansion, molecular_lode


def methanol_chloride(seed=0, separation=6.0):
    rng = np.random.default_rng(seed)
    m = molecule("CH3OH")
    m.positions += rng.normal(scale=0.05, size=m.positions.shape)
    return m + Atoms("Cl", positions=[[separation, 0.4, -0.3]])


def water_box(seed=0):
    rng = np.random.default_rng(seed)
    return Atoms("H4O2", positions=rng.uniform(0, 5, (6, 3)),
                 cell=[[5.1, 0.2, 0.0], [0.0, 4.7, 0.3], [0.1, 0.0, 5.3]], pbc=True)


def transformed(atoms, rotation, shift):
    out = atoms.copy()
    if atoms.pbc.any():
        out.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    out.positions = atoms.positions @ rotation.T + shift
    return out


@pytest.mark.parametrize("make,species", [(methanol_chloride, [1, 6, 8, 17]), (water_box, [1, 8])],
                         ids=["molecule", "periodic"])
@pytest.mark.parametrize("reflection", [False, True])
def test_features_are_covariant_and_translation_invariant(make, species, reflection):
    atoms = make()
    featurizer = LodeFeaturizer(species, lode_square=True, lode_smearing=1.0)  # a 5 Å cell: σ = 4 Å finds no k-vector
    ref = featurizer.compute([atoms])
    rotation = random_rotation(np.random.default_rng(5), reflection=reflection)
    moved = featurizer.compute([transformed(atoms, rotation, np.array([0.7, -1.3, 2.1]))])
    shifted = featurizer.compute([transformed(atoms, np.eye(3), np.array([3.3, 0.2, -4.0]))])
    for lam in (0, 1, 2):
        assert set(ref.blocks[lam]) >= {"local", "lode", "multiscale", "lode2"}
        d = wigner_d_real(rotation, lam)
        for name, x in ref.blocks[lam].items():
            scale = np.abs(x).max()
            assert scale > 0, name
            np.testing.assert_allclose(np.einsum("mn,inf->imf", d, x), moved.blocks[lam][name], atol=1e-10 * scale)
            np.testing.assert_allclose(x, shifted.blocks[lam][name], atol=1e-10 * scale)


def test_molecular_potential_has_the_known_multipole_form():
    # l = 0: Y00 Σ_j 1/sqrt(r² + w²); l = 1 (y, z, x): sqrt(3/4π) Σ_j (r_j − r_i) / (r² + w²)^{3/2}
    atoms = methanol_chloride()
    widths = (1.0, 3.0)
    pot = molecular_lode([atoms], [1, 6, 8, 17], 1, widths)
    i, cl = 0, len(atoms) - 1  # the C atom, the chloride's channel (species 17 = slot 3)
    d = atoms.positions[cl] - atoms.positions[i]
    r = np.linalg.norm(d)
    for k, w in enumerate(widths):
        assert pot[0][i, 0, 3 * 2 + k] == pytest.approx(np.sqrt(1 / (4 * np.pi)) / np.sqrt(r * r + w * w), rel=1e-12)
        field = np.sqrt(3 / (4 * np.pi)) * d / (r * r + w * w) ** 1.5
        np.testing.assert_allclose(pot[1][i, :, 3 * 2 + k], field[[1, 2, 0]], rtol=1e-12)


def test_far_ion_still_changes_the_features_a_local_model_cannot_see():
    near, far = methanol_chloride(separation=9.0), methanol_chloride(separation=11.0)
    featurizer = LodeFeaturizer([1, 6, 8, 17], cutoffs=(5.0,))
    a, b = featurizer.compute([near]), featurizer.compute([far])
    first = slice(0, 6)  # the methanol atoms
    np.testing.assert_array_equal(a.blocks[1]["local"][first], b.blocks[1]["local"][first])
    assert np.abs(a.blocks[1]["multiscale"][first] - b.blocks[1]["multiscale"][first]).max() > 1e-4


def test_coupling_equals_featomics_cross_power_spectrum():
    import featomic
    from featomic.basis import Gto, TensorProduct
    from featomic.clebsch_gordan import EquivariantPowerSpectrum
    from featomic.cutoff import Cutoff, ShiftedCosine
    from featomic.density import Gaussian, SmearedPowerLaw

    atoms = water_box(3)
    species = [1, 8]
    sr = featomic.SphericalExpansion(
        cutoff=Cutoff(radius=3.5, smoothing=ShiftedCosine(width=0.5)), density=Gaussian(width=0.3),
        basis=TensorProduct(max_angular=2, radial=Gto(max_radial=2)))
    lr = featomic.LodeSphericalExpansion(
        density=SmearedPowerLaw(smearing=1.0, exponent=1),
        basis=TensorProduct(max_angular=2, radial=Gto(max_radial=1, radius=3.5)))
    ours_sr = dense_expansion(sr.compute([atoms]), [atoms], species, 2, 3)
    ours_lr = dense_expansion(lr.compute([atoms]), [atoms], species, 2, 2)
    theirs = EquivariantPowerSpectrum(sr, lr, neighbor_types=species).compute([atoms], neighbors_to_properties=True)
    for lam in (0, 1, 2):
        ours = couple(ours_sr, ours_lr, lam, ordered_only=True)  # featomic keeps l1 <= l2 only
        assert couple(ours_sr, ours_lr, lam).shape[-1] > ours.shape[-1] or lam == 0
        for key, block in theirs.items():
            if int(key["o3_lambda"]) != lam or int(key["o3_sigma"]) != 1:
                continue
            rows = np.asarray(block.samples.values)[:, 1]
            x = np.asarray(block.values)  # (centres, 2λ+1, features): compare the kernels (feature order differs)
            k_theirs = np.einsum("imf,jmf->ij", x, x)
            k_ours = np.einsum("imf,jmf->ij", ours[rows], ours[rows])
            np.testing.assert_allclose(k_ours, k_theirs, rtol=1e-10, atol=1e-12 * np.abs(k_theirs).max())
            np.testing.assert_allclose(np.sort(np.abs(ours[rows]).ravel()), np.sort(np.abs(x).ravel()), rtol=1e-10,
                                       atol=1e-12 * np.abs(x).max())


def test_bad_cells_are_one_line_errors():
    featurizer = LodeFeaturizer([1, 8])
    flat = water_box()
    flat.set_cell([[5, 0, 0], [0, 5, 0], [5, 5, 0]], scale_atoms=False)
    with pytest.raises(DataError, match=r"^frame 0: a periodic frame handed to a LODE model needs a cell with a volume"):
        featurizer.compute([flat])
    slab = water_box()
    slab.pbc = [True, True, False]
    with pytest.raises(DataError, match=r"^frame 0: LODE features of a cell periodic in only some directions"):
        featurizer.compute([slab])
    molecule_ = Atoms("H2O", positions=[[0, 0, 0], [0.9, 0, 0], [0, 0.9, 0.2]])
    with pytest.raises(DataError, match=r"^frame 1: molecules and periodic cells cannot share one LODE batch"):
        featurizer.compute([molecule_, water_box()])


def test_lode_box_computes_a_molecules_potential_by_ewald_and_refuses_a_small_box():
    atoms = methanol_chloride()
    direct = LodeFeaturizer([1, 6, 8, 17]).compute([atoms])
    boxed = LodeFeaturizer([1, 6, 8, 17], lode_box=25.0, lode_smearing=2.0).compute([atoms])
    moved = atoms.copy()
    moved.translate([4.0, -7.0, 1.5])
    again = LodeFeaturizer([1, 6, 8, 17], lode_box=25.0, lode_smearing=2.0).compute([moved])
    assert not boxed.periodic and boxed.blocks[1]["lode"].shape[-1] == 4 * 3  # species × (lode_max_radial + 1)
    assert direct.blocks[1]["lode"].shape[-1] == 4 * 2  # species × widths
    np.testing.assert_allclose(again.blocks[1]["lode"], boxed.blocks[1]["lode"], atol=1e-10 * np.abs(boxed.blocks[1]["lode"]).max())
    with pytest.raises(DataError, match=r"^frame 0: lode_box 4 Å is smaller than the molecule \(\d+\.\d Å across\)$"):
        LodeFeaturizer([1, 6, 8, 17], lode_box=4.0).compute([atoms])


def test_k_cutoff_reaches_featomic():
    atoms = water_box()
    ref = LodeFeaturizer([1, 8], lode_smearing=2.0).compute([atoms]).blocks[0]["lode"]
    same = LodeFeaturizer([1, 8], lode_smearing=2.0, lode_k_cutoff=1.2 * np.pi / 2.0).compute([atoms]).blocks[0]["lode"]
    coarse = LodeFeaturizer([1, 8], lode_smearing=2.0, lode_k_cutoff=1.5).compute([atoms]).blocks[0]["lode"]
    np.testing.assert_allclose(same, ref, rtol=0, atol=1e-13 * np.abs(ref).max())  # featomic's default: 1.2π/σ
    assert np.abs(coarse - ref).max() > 1e-3 * np.abs(ref).max()
    # a 5 Å cell has no reciprocal vector shorter than 2π/5.3 Å ≈ 1.2 Å⁻¹: a smearing of 4 Å (cut-off 0.94) finds none
    with pytest.raises(DataError, match=r"^frame 1: no reciprocal lattice vector within the LODE k-space cut-off 0.94"):
        LodeFeaturizer([1, 8], lode_smearing=4.0).compute([water_box(1).repeat((2, 2, 2)), atoms])
