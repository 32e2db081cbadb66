"""The dense spherical expansion equals featomic's TensorMap, read either way.

``SphericalExpansion(engine="featomic").compute`` reads featomic's blocks through metatensor's C API
(:mod:`mdplugin.features.raw_blocks`) and skips reading sample labels a block's size already
determines. Both shortcuts are checked here against a reference built with metatensor's own Python
operations (``keys_to_properties`` / ``keys_to_samples``), on systems where they could go wrong:
atoms without neighbours of some species, several frames of different compositions, a periodic cell.
(The tabulated engine, which "auto" uses for molecules, is compared with this path in
``tests/features/test_tabulated_expansion.py``.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

from mdplugin.features.expansion import SphericalExpansion
from mdplugin.features.raw_blocks import BlockReader

TRAJ = Path(__file__).resolve().parents[2] / "examples" / "trajectories"


def reference_dense(calc: SphericalExpansion, frames, gradients: bool):
    """Dense values (and pair-indexed gradients) through metatensor's Python operations."""
    from metatensor import Labels

    sizes = np.array([len(a) for a in frames])
    offsets = np.r_[0, np.cumsum(sizes)]
    n = int(offsets[-1])
    tensor = calc.calculator.compute(
        [a if a.pbc.any() else Atoms(a.numbers, a.positions) for a in frames],
        gradients=["positions"] if gradients else None,
    )
    tensor = tensor.keys_to_properties(Labels("neighbor_type", np.array(calc.species, dtype=np.int32)[:, None]))
    tensor = tensor.keys_to_samples("center_type")
    n_prop = len(calc.species) * (calc.max_radial + 1)
    values, grads = {}, {}
    for key, block in tensor.items():
        l = int(key["o3_lambda"])
        assert block.properties.names == ["neighbor_type", "n"]
        rows = offsets[block.samples.column("system")] + block.samples.column("atom")
        dense = np.zeros((n, 2 * l + 1, n_prop))
        dense[rows] = block.values
        values[l] = dense
        if gradients:
            g = block.gradient("positions")
            s = g.samples.values
            grads[l] = {(int(rows[a]), int(offsets[b] + c)): g.values[k] for k, (a, b, c) in enumerate(s)}
    return values, grads


def assert_equals_reference(calc: SphericalExpansion, frames, gradients: bool) -> None:
    """``calc.compute(frames)`` equals :func:`reference_dense` exactly (every reference gradient pair
    present, the extra pairs zero)."""
    exp = calc.compute(frames, gradients=gradients)
    values, grads = reference_dense(calc, frames, gradients)
    for l in range(calc.max_angular + 1):
        np.testing.assert_array_equal(exp.values[l], values[l])
        if gradients:
            got = {(int(i), int(j)): exp.gradient_values[l][k] for k, (i, j) in enumerate(exp.pairs)}
            assert set(grads[l]) <= set(got)
            for pair, g in got.items():
                np.testing.assert_array_equal(g, grads[l].get(pair, 0.0 * g))


def frames_and_species():
    dce = read(TRAJ / "dce_test.xyz", ":3")
    water = read(TRAJ / "water.xyz", ":2")
    # atoms with no neighbour of some species within the cutoff (blocks with fewer samples)
    lonely = Atoms("HClCH", positions=[[0, 0, 0], [0, 0, 1.3], [0, 0, 9.0], [0, 0, 10.1]])
    salt = bulk("NaCl", "rocksalt", a=5.6) * (2, 1, 1)
    salt.rattle(0.1, seed=1)
    return [
        (dce[:1], [1, 6, 17]),
        (dce + water, [1, 6, 8, 17]),
        ([lonely, dce[0]], [1, 6, 17]),
        ([lonely], [1, 6, 8, 17]),
        ([salt], [11, 17]),
    ]


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("gradients", [False, True])
def test_dense_expansion_equals_metatensor_reference(case, gradients):
    frames, species = frames_and_species()[case]
    calc = SphericalExpansion(species, cutoff=4.5, max_radial=3, max_angular=3, engine="featomic")
    assert_equals_reference(calc, frames, gradients)


def test_c_api_reader_is_used_and_equals_python_api():
    frames, species = frames_and_species()[2]
    calc = SphericalExpansion(species, max_radial=3, max_angular=2)
    tensor = calc.calculator.compute([Atoms(a.numbers, a.positions) for a in frames], gradients=["positions"])
    fast, slow = BlockReader(tensor), BlockReader(tensor, fast=False)
    assert fast.fast and not slow.fast  # the C path works with the installed metatensor
    np.testing.assert_array_equal(fast.keys(), slow.keys())
    n = len(fast.keys())
    for a, b in zip(fast.all_values(n), slow.all_values(n)):
        np.testing.assert_array_equal(a, b)
    for i in range(n):
        np.testing.assert_array_equal(fast.samples(i), slow.samples(i))
        for a, b in zip(fast.gradient(i, "positions"), slow.gradient(i, "positions")):
            np.testing.assert_array_equal(a, b)
    some = np.arange(n) % 3 == 0
    (fa, fs, fg), (sa, ss, sg) = (r.flat(n, "positions", some, 16) for r in (fast, slow))
    np.testing.assert_array_equal(fa, sa)  # capacity 16 makes the C path grow its buffer
    assert fs == ss
    for i in range(n):
        assert (fg[i] is None) == (not some[i])
        if some[i]:
            np.testing.assert_array_equal(fg[i], sg[i])
    assert fast.fast  # nothing above fell back to the Python API


def test_scatter_plans_are_reused_only_where_they_fit():
    """One calculator, many calls: moved atoms (same plan), other molecules and batches (new plans),
    then the first again: every result equals metatensor's own dense reference."""
    cases = frames_and_species()
    dce, mixed = cases[0][0], cases[1][0]
    calc = SphericalExpansion([1, 6, 8, 17], cutoff=4.5, max_radial=3, max_angular=3, engine="featomic")
    moved = dce[0].copy()
    moved.rattle(0.05, seed=3)
    # the same block sizes, but a different H lacks a Cl neighbour: the plan must not be reused blindly
    near_far = Atoms("ClHH", positions=[[0, 0, 0], [1.3, 0, 0], [0, 9.0, 0]])
    far_near = Atoms("ClHH", positions=[[0, 0, 0], [0, 9.0, 0], [1.3, 0, 0]])
    for frames in ([dce[0]], [moved], mixed, mixed[::-1], [dce[0]], [moved], [near_far], [far_near]):
        for gradients in (False, True):
            assert_equals_reference(calc, frames, gradients)
