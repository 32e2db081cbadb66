"""The tabulated numpy spherical expansion equals featomic's, for molecules.

:mod:`mdplugin.features.tabulated` computes the dense expansion without featomic (its radial
functions are featomic's splines, read back once).  Here it is compared with the featomic path of
:class:`SphericalExpansion` (values, pairs, gradients, centres) on molecules where the sample and
pair sets are irregular, its gradients with finite differences of its own values, and its
spherical harmonics with analytic properties (orthonormality, Y_l0 on the z axis) and with
featomic's angular dependence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

from mdplugin.features.expansion import SphericalExpansion
from mdplugin.features.tabulated import TabulatedExpansion, radial_table, solid_harmonic_tables
from mdplugin.core.errors import ConfigError

TRAJ = Path(__file__).resolve().parents[2] / "examples" / "trajectories"
MD_HYPERS = dict(cutoff=5.0, max_radial=4, max_angular=3, gaussian_width=0.3, smoothing_width=0.5)
OTHER_HYPERS = dict(cutoff=4.0, max_radial=6, max_angular=4, gaussian_width=0.4, smoothing_width=0.8)
TOL = 1e-8  # relative to the largest |value| (or |gradient|) of the same l


def lonely_molecule() -> Atoms:
    """An H without a Cl neighbour, a C farther than the cutoff from everything, pairs inside the
    smoothing shell, one pair exactly at 5 Å (featomic's test is r² < rc²: not a pair) and one just
    inside."""
    return Atoms("HClCHHO", positions=[[0, 0, 0], [0, 0, 1.3], [0, 0, 30.0], [0, 0, 4.8],
                                       [3.0, 0, 1.3], [3.0, 0, 6.3]])


def edge_molecule() -> Atoms:
    """H–H exactly at the 5 Å cutoff (not a pair for featomic: r² < rc²), H–Cl 1e-9 Å inside."""
    return Atoms("HHCl", positions=[[0, 0, 0], [0, 0, 5.0], [3.0, 0, 4.0 - 1.25e-9]])


def cases():
    dce = read(TRAJ / "dce_train.xyz", ":4")
    water = read(TRAJ / "water.xyz", ":3")
    return {
        "dce": (dce, [1, 6, 17]),
        "water": (water, [1, 8]),
        "mixed": ([water[0], dce[0], lonely_molecule(), dce[1], Atoms("H", positions=[[0, 0, 0]]), water[1]],
                  [1, 6, 8, 17]),
        "lonely": ([lonely_molecule()], [1, 6, 8, 17]),
        "edge": ([edge_molecule(), edge_molecule()], [1, 17]),
    }


def assert_close(tab, ref, tol=TOL):
    np.testing.assert_array_equal(tab.centre_frame, ref.centre_frame)
    np.testing.assert_array_equal(tab.centre_atom, ref.centre_atom)
    np.testing.assert_array_equal(tab.centre_species, ref.centre_species)
    assert tab.n_frames == ref.n_frames and tab.species == ref.species
    for l in range(ref.max_angular + 1):
        assert tab.values[l].shape == ref.values[l].shape and tab.values[l].flags.c_contiguous
        scale = np.abs(ref.values[l]).max()
        assert np.abs(tab.values[l] - ref.values[l]).max() <= tol * scale, l
    if ref.pairs is None:
        assert tab.pairs is None and tab.gradient_values is None
        return
    np.testing.assert_array_equal(tab.pairs, ref.pairs)
    for l in range(ref.max_angular + 1):
        assert tab.gradient_values[l].shape == ref.gradient_values[l].shape
        scale = np.abs(ref.gradient_values[l]).max()
        assert np.abs(tab.gradient_values[l] - ref.gradient_values[l]).max() <= tol * scale, l


@pytest.mark.parametrize("name", ["dce", "water", "mixed", "lonely", "edge"])
@pytest.mark.parametrize("hypers", [MD_HYPERS, OTHER_HYPERS], ids=["md", "other"])
@pytest.mark.parametrize("gradients", [False, True])
def test_tabulated_equals_featomic(name, hypers, gradients):
    frames, species = cases()[name]
    featomic = SphericalExpansion(species, engine="featomic", **hypers)
    tabulated = SphericalExpansion(species, engine="tabulated", **hypers)
    ref = featomic.compute(frames, gradients=gradients)
    tab = tabulated.compute(frames, gradients=gradients)
    assert tabulated._tabulated is not None and featomic._tabulated is None
    assert_close(tab, ref)


def test_radial_table_reproduces_featomic_spline():
    """The probe grid was refined until it reproduces featomic's spline to 1e-13 (not merely
    approximates the radial integral)."""
    for hypers in (MD_HYPERS, OTHER_HYPERS):
        table = radial_table(SphericalExpansion([1], **hypers).hypers())
        assert table.grid_error <= 1e-13
        assert table.n_intervals % 10 == 0  # 10·2^k intervals, as featomic bisects


def test_repeated_calls_and_moving_pairs():
    """One engine, many calls: atoms moving in and out of the cutoff (cached layouts must not be
    reused for another pair set), the same molecule again, another batch."""
    species = [1, 6, 8, 17]
    featomic = SphericalExpansion(species, engine="featomic", **MD_HYPERS)
    tabulated = SphericalExpansion(species, engine="tabulated", **MD_HYPERS)
    dce = read(TRAJ / "dce_train.xyz", ":2")
    near, far = lonely_molecule(), lonely_molecule()
    far.positions[3, 2] = 5.3  # the H at 4.8 Å leaves the first H's cutoff
    for frames in ([dce[0]], [near], [far], [near], dce, [dce[0]], [far, near]):
        for gradients in (True, False):
            assert_close(tabulated.compute(frames, gradients=gradients), featomic.compute(frames, gradients=gradients))


def test_gradients_equal_finite_differences():
    species = [1, 6, 8, 17]
    shell = lonely_molecule()
    shell.positions[5, 2] = 6.2  # H–O at 4.9 Å, inside the smoothing shell (not exactly at the cutoff)
    frames = [read(TRAJ / "dce_train.xyz", index=5), shell]
    calc = SphericalExpansion(species, engine="tabulated", **MD_HYPERS)
    exp = calc.compute(frames, gradients=True)
    offsets = np.r_[0, np.cumsum([len(a) for a in frames])]
    row_of = {(int(i), int(j)): k for k, (i, j) in enumerate(exp.pairs)}
    h = 1e-5
    for f, atoms in enumerate(frames):
        for a in range(len(atoms)):
            for x in range(3):
                plus, minus = [fr.copy() for fr in frames], [fr.copy() for fr in frames]
                plus[f].positions[a, x] += h
                minus[f].positions[a, x] -= h
                vp, vm = calc.compute(plus).values, calc.compute(minus).values
                j = offsets[f] + a
                for l in range(calc.max_angular + 1):
                    numeric = (vp[l] - vm[l]) / (2 * h)  # (n_centres, 2l+1, F)
                    analytic = np.zeros_like(numeric)
                    for i in range(exp.n_centres):
                        k = row_of.get((i, j))
                        if k is not None:
                            analytic[i] = exp.gradient_values[l][k, x]
                    scale = np.abs(exp.gradient_values[l]).max()
                    assert np.abs(numeric - analytic).max() <= 1e-6 * scale, (f, a, x, l)


def test_spherical_harmonics_are_orthonormal_and_featomics():
    """Our Y_lm: orthonormal on the sphere (Gauss–Legendre × uniform φ quadrature, exact for these
    degrees), Y_l0(ẑ) = √((2l+1)/4π), and the same angular dependence as featomic's coefficients
    (which are G_l(r)·Y_lm(r̂): ratios at equal r cancel G)."""
    max_angular = 4
    exps, tables = solid_harmonic_tables(max_angular)

    def harmonics(u):
        mono = np.prod(u[:, None, :] ** exps[None, :, :], axis=2)
        return mono @ tables[:, 0]

    nodes, weights = np.polynomial.legendre.leggauss(12)
    phi = np.arange(24) * (2 * np.pi / 24)
    ct, ph = np.meshgrid(nodes, phi, indexing="ij")
    st = np.sqrt(1 - ct**2)
    u = np.stack([st * np.cos(ph), st * np.sin(ph), ct], axis=-1).reshape(-1, 3)
    w = (weights[:, None] * np.full(len(phi), 2 * np.pi / len(phi))[None, :]).ravel()
    y = harmonics(u)
    np.testing.assert_allclose(y.T @ (w[:, None] * y), np.eye((max_angular + 1) ** 2), atol=1e-13)
    y_z = harmonics(np.array([[0.0, 0.0, 1.0]]))[0]
    for l in range(max_angular + 1):
        assert y_z[l * l + l] == pytest.approx(np.sqrt((2 * l + 1) / (4 * np.pi)), rel=1e-14)

    # featomic: H at the origin, C at 1.7 Å along random directions and along z
    rng = np.random.default_rng(7)
    dirs = rng.normal(size=(6, 3))
    dirs /= np.linalg.norm(dirs, axis=1)[:, None]
    frames = [Atoms("HC", positions=[[0, 0, 0], 1.7 * d]) for d in np.r_[dirs, [[0, 0, 1]]]]
    exp = SphericalExpansion([1, 6], engine="featomic", cutoff=4.0, max_radial=2,
                             max_angular=max_angular).compute(frames)
    ours = harmonics(dirs)
    for l in range(max_angular + 1):
        coeffs = exp.coefficients[l][0::2, 1]  # centre H, neighbour C: (frames, 2l+1, n_radial)
        along_z = coeffs[-1, l, 0]  # m = 0 along z: G_l · Y_l0(ẑ)
        ratio = coeffs[:-1, :, 0] / along_z * y_z[l * l + l]  # = Y_lm(d) in featomic's convention
        np.testing.assert_allclose(ratio, ours[:, l * l : (l + 1) ** 2], atol=1e-12)


def test_engine_choice():
    salt = bulk("NaCl", "rocksalt", a=5.6)
    dce = read(TRAJ / "dce_train.xyz", index=0)
    auto = SphericalExpansion([1, 6, 11, 17], **MD_HYPERS)
    assert auto.engine == "auto"
    auto.compute([dce])
    assert auto._tabulated is not None and auto._calculator is None  # molecules: tabulated
    featomic = SphericalExpansion([1, 6, 11, 17], engine="featomic", **MD_HYPERS)
    ref = featomic.compute([salt, dce], gradients=True)
    # a batch with a periodic frame goes to featomic, even when asked for the tabulated engine
    forced = SphericalExpansion([1, 6, 11, 17], engine="tabulated", **MD_HYPERS)
    got = forced.compute([salt, dce], gradients=True)
    assert forced._tabulated is None
    for l in range(4):
        np.testing.assert_array_equal(got.values[l], ref.values[l])
    with pytest.raises(ConfigError, match="engine"):
        SphericalExpansion([1], engine="numpy").compute([dce[:1]])


def test_auto_engine_size_rule():
    """"auto": the tabulated engine up to AUTO_MAX_ATOMS atoms per frame (fewer without gradients),
    featomic beyond; both give the same numbers."""
    water = read(TRAJ / "water.xyz", index=0)
    grid = np.array([(a, b, c) for a in range(3) for b in range(3) for c in range(3)]) * 3.1
    cluster = Atoms(numbers=np.tile(water.numbers, len(grid)),
                    positions=np.concatenate([water.positions + p for p in grid]))  # 81 atoms
    small, large = SphericalExpansion.AUTO_MAX_ATOMS
    assert small < len(cluster) <= large
    ref = SphericalExpansion([1, 8], engine="featomic", **MD_HYPERS)
    for gradients, engine in ((False, "featomic"), (True, "tabulated")):
        auto = SphericalExpansion([1, 8], **MD_HYPERS)
        got = auto.compute([cluster], gradients=gradients)
        assert (auto._tabulated is not None) == (engine == "tabulated")
        assert (auto._calculator is not None) == (engine == "featomic")
        assert_close(got, ref.compute([cluster], gradients=gradients))


def test_tabulated_engine_is_shared_per_hypers():
    a = TabulatedExpansion(SphericalExpansion([1, 6], **MD_HYPERS).hypers(), [1, 6])
    b = TabulatedExpansion(SphericalExpansion([1, 6, 17], **MD_HYPERS).hypers(), [1, 6, 17])
    assert a.table is b.table


def test_featomic_computes_when_the_table_is_not_exact(monkeypatch):
    """If featomic's spline could not be reproduced (grid refinements exhausted), "auto" and
    "tabulated" fall back to featomic (with a warning) instead of returning approximate numbers."""
    import mdplugin.features.tabulated as tabulated

    monkeypatch.setattr(tabulated, "_MAX_REFINEMENTS", 1)
    monkeypatch.setattr(tabulated, "_TABLES", {})
    hypers = dict(MD_HYPERS, cutoff=4.7)
    frames = read(TRAJ / "dce_train.xyz", ":2")
    calc = SphericalExpansion([1, 6, 17], engine="tabulated", **hypers)
    with pytest.warns(RuntimeWarning, match="could not reproduce"):
        got = calc.compute(frames, gradients=True)
    assert not calc._tabulated.exact and calc._calculator is not None
    ref = SphericalExpansion([1, 6, 17], engine="featomic", **hypers).compute(frames, gradients=True)
    for l in range(4):
        np.testing.assert_array_equal(got.values[l], ref.values[l])
        np.testing.assert_array_equal(got.gradient_values[l], ref.gradient_values[l])


@pytest.mark.parametrize("gradients", [False, True])
def test_a_frames_numbers_do_not_depend_on_its_batch(gradients):
    """Bit-identical values and gradients for a frame alone, in a small batch and in a large one
    (MPI fits split batches differently from serial ones and are meant to be bit-identical)."""
    frames = read(TRAJ / "dce_train.xyz", ":300")
    calc = SphericalExpansion([1, 6, 17], engine="tabulated", **MD_HYPERS)
    alone = calc.compute(frames[7:8], gradients=gradients)
    for batch, first in ((frames[5:9], 2), (frames, 7)):
        exp = calc.compute(batch, gradients=gradients)
        rows = slice(8 * first, 8 * first + 8)
        for l in range(4):
            np.testing.assert_array_equal(exp.values[l][rows], alone.values[l])
        if gradients:
            mine = (exp.pairs[:, 0] >= rows.start) & (exp.pairs[:, 0] < rows.stop)
            np.testing.assert_array_equal(exp.pairs[mine] - rows.start, alone.pairs)
            for l in range(4):
                np.testing.assert_array_equal(exp.gradient_values[l][mine], alone.gradient_values[l])


# --------------------------------------------------------------------------------------------
# the radial table's disk cache
# --------------------------------------------------------------------------------------------


def _fresh_cache(monkeypatch, folder) -> None:
    """Point the disk cache at ``folder`` and forget the tables of this process."""
    import mdplugin.features.tabulated as tabulated

    monkeypatch.setenv("MDPLUGIN_CACHE", str(folder))
    monkeypatch.setattr(tabulated, "_TABLES", {})


def _assert_same_table(a, b) -> None:
    for name in ("cutoff", "smoothing_width", "step", "grid_error"):
        assert getattr(a, name) == getattr(b, name)
    for name in ("coefficients", "self_contribution", "value_and_derivative"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == np.float64 and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_radial_table_loaded_from_disk_equals_a_fresh_one(tmp_path, monkeypatch):
    """A table written by one process and read by the next is bit for bit the freshly built one,
    and reading it does not tabulate again."""
    import mdplugin.features.tabulated as tabulated

    hypers = SphericalExpansion([1], **OTHER_HYPERS).hypers()
    _fresh_cache(monkeypatch, tmp_path)
    fresh = radial_table(hypers)
    files = list(tmp_path.glob("radial-table-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    _fresh_cache(monkeypatch, tmp_path)
    monkeypatch.setattr(tabulated, "_build_table", lambda *a: pytest.fail("tabulated again"))
    loaded = radial_table(hypers)
    assert loaded is not fresh
    _assert_same_table(loaded, fresh)
    # other hypers: another file
    monkeypatch.undo()
    _fresh_cache(monkeypatch, tmp_path)
    radial_table(SphericalExpansion([1], **MD_HYPERS).hypers())
    assert len(list(tmp_path.glob("radial-table-*.npz"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "foreign", "wrong shape"])
def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch, damage):
    import mdplugin.features.tabulated as tabulated

    hypers = SphericalExpansion([1], **MD_HYPERS).hypers()
    _fresh_cache(monkeypatch, tmp_path)
    fresh = radial_table(hypers)
    (path,) = tmp_path.glob("radial-table-*.npz")
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not an npz file at all" * 100)
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path) as data:
            arrays = dict(data)
        if damage == "foreign":  # the file of other hypers (a hash collision, or a copied file)
            arrays["identity"] = np.array(str(arrays["identity"]).replace('"radius":5.0', '"radius":6.0'))
        else:
            arrays["coefficients"] = arrays["coefficients"][:, :-1]
        with open(path, "wb") as out:
            np.savez(out, **arrays)
    builds = []
    build = tabulated._build_table
    monkeypatch.setattr(tabulated, "_build_table", lambda *a: builds.append(1) or build(*a))
    _fresh_cache(monkeypatch, tmp_path)
    rebuilt = radial_table(hypers)
    assert builds == [1]
    _assert_same_table(rebuilt, fresh)
    _fresh_cache(monkeypatch, tmp_path)  # the file was rewritten: read, not rebuilt
    _assert_same_table(radial_table(hypers), fresh)
    assert builds == [1]


def test_cache_off_and_unwritable(tmp_path, monkeypatch):
    hypers = SphericalExpansion([1], **MD_HYPERS).hypers()
    _fresh_cache(monkeypatch, "off")
    ref = radial_table(hypers)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _fresh_cache(monkeypatch, blocker / "cache")  # cannot be created: the table is simply not kept
    _assert_same_table(radial_table(hypers), ref)
    assert list(tmp_path.iterdir()) == [blocker]


def test_a_cached_table_spares_importing_featomic(tmp_path):
    """A new process that finds the table on disk computes the expansion without featomic."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ase.io import read\n"
        "from mdplugin.features.expansion import SphericalExpansion\n"
        f"frames = read({str(TRAJ / 'dce_train.xyz')!r}, ':2')\n"
        "SphericalExpansion([1, 6, 17], engine='tabulated').compute(frames, gradients=True)\n"
        "print('featomic' in sys.modules)\n"
    )
    env = {**__import__("os").environ, "MDPLUGIN_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["True"] and second.stdout.split() == ["False"]


@pytest.mark.parametrize("name", ["dce", "mixed", "lonely", "edge"])
def test_pair_gradients_contract_forces_like_featomics_dense_gradients(name):
    """The tabulated engine keeps its gradients per pair and contracts them with ∂E/∂c directly
    (an MD step never builds the dense arrays): the forces equal the contraction of featomic's
    dense gradients, −Σ_pairs (∂E/∂c_i)·(∂c_i/∂r_j), for any ∂E/∂c, across a batch of molecules."""
    frames, species = cases()[name]
    ref = SphericalExpansion(species, engine="featomic", **MD_HYPERS).compute(frames, gradients=True)
    tab = SphericalExpansion(species, engine="tabulated", **MD_HYPERS).compute(frames, gradients=True)
    assert hasattr(tab.gradient_values, "forces")
    rng = np.random.default_rng(7)
    de_dc = [rng.normal(size=v.shape) for v in ref.values]
    expected = np.zeros((ref.n_centres, 3))
    for l, b in enumerate(de_dc):
        per_pair = np.einsum("kamp,kmp->ka", ref.gradient_values[l], b[ref.pairs[:, 0]])
        np.add.at(expected, ref.pairs[:, 1], -per_pair)
    forces = tab.gradient_values.forces(de_dc)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(forces, expected, rtol=0, atol=1e-8 * np.abs(expected).max())


@pytest.mark.parametrize("name", ["dce", "mixed", "lonely"])
def test_both_engines_contract_gradients_into_the_same_forces(name):
    """featomic's dense gradients (DenseGradients) and the tabulated per-pair blocks
    (PairGradients) give the same −Σ (∂E/∂c)·(∂c/∂r) for any ∂E/∂c, and equal the contraction
    of the dense arrays written out by hand."""
    from mdplugin.features.expansion import DenseGradients

    frames, species = cases()[name]
    ref = SphericalExpansion(species, engine="featomic", **MD_HYPERS).compute(frames, gradients=True)
    tab = SphericalExpansion(species, engine="tabulated", **MD_HYPERS).compute(frames, gradients=True)
    assert isinstance(ref.gradient_values, DenseGradients)
    rng = np.random.default_rng(7)
    de_dc = [rng.normal(size=v.shape) for v in ref.values]
    expected = np.zeros((ref.n_centres, 3))
    for l, grad in enumerate(ref.gradient_values):
        for p, (i, j) in enumerate(ref.pairs):
            expected[j] -= grad[p].reshape(3, -1) @ de_dc[l][i].ravel()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(ref.gradient_values.forces(de_dc), expected, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(tab.gradient_values.forces(de_dc), expected, rtol=0, atol=1e-10 * scale)
