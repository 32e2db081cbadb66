"""The ``soap`` energy model at its defaults on a periodic liquid: energies and forces of held-out
boxes learned far better than predicting the mean.

Reference: flexible TIP3P-like water (ASE's TIP3P intermolecular terms with a 4.5 Å cutoff in the
periodic cell, Morse O–H bonds and harmonic H–O–H angles from ``ase.calculators.ff``), on boxes
made from the 32-molecule TIP3P snapshot of ``/work/shared/data/water-box`` by moving every molecule
(0.15 Å) and every atom (0.02 Å) at random: training and test boxes from different seeds.

Before the baseline was fitted jointly with the GPR weights, the default number of sparse
environments went from 200 to 1000 per species and the energy noise from 10 to 1 meV/atom, the default model predicted the held-out energies
worse than their mean (GFN2-xTB water: 320 % of the spread on 25 boxes); the thresholds below come
from the measurement in the docstring of the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.calculators.ff import ForceField
from ase.calculators.mixing import SumCalculator
from ase.calculators.tip3p import TIP3P
from ase.io import read
from ase.utils.ff import Angle, Morse

from mdplugin.models.soap import SoapEnergyModel

BOX = Path("/work/shared/data/water-box/water32_tip3p_300K.xyz")


def _reference(n_molecules: int) -> SumCalculator:
    morses = [Morse(3 * m, 3 * m + h, D=4.0, alpha=2.3, r0=0.96) for m in range(n_molecules) for h in (1, 2)]
    angles = [Angle(3 * m + 1, 3 * m, 3 * m + 2, k=4.0, a0=np.deg2rad(104.5)) for m in range(n_molecules)]
    return SumCalculator([TIP3P(rc=4.5), ForceField(morses=morses, angles=angles)])


def _boxes(n: int, seed: int, n_molecules: int = 32):
    """``n`` labelled boxes of the first ``n_molecules`` molecules of the snapshot (fewer than 32: a
    less dense liquid): the frames and their energies (n,) eV and forces, (n_atoms, 3) eV/Å each."""
    start = read(BOX)[: 3 * n_molecules]
    calc = _reference(n_molecules)
    rng = np.random.default_rng(seed)
    frames, energies, forces = [], [], []
    for _ in range(n):
        atoms = start.copy()
        atoms.positions += np.repeat(rng.normal(scale=0.15, size=(n_molecules, 3)), 3, axis=0)
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
        atoms.calc = None
        frames.append(atoms)
    return frames, np.array(energies), forces


def _errors(model, frames, energies, forces) -> tuple[float, float]:
    """Energy and force RMSE of ``model`` in % of the spread of the reference values."""
    pred_e = model.predict(frames)
    pred_f = np.concatenate(model.predict_forces(frames))
    f_y = np.concatenate(forces)
    return (100 * np.sqrt(np.mean((pred_e - energies) ** 2)) / np.std(energies),
            100 * np.sqrt(np.mean((pred_f - f_y) ** 2)) / np.std(f_y))


@pytest.mark.skipif(not BOX.exists(), reason="reference water box not available")
def test_default_energy_model_learns_a_periodic_liquid() -> None:
    """16 training boxes of 32 molecules, 6 held-out boxes: energy RMSE well below the test spread,
    forces well below their spread, training energies fitted to about their noise.

    Measured (7 Dec 2026): energy 37 % of the spread of the box energies, forces 14.8 % of theirs;
    with the code before (baseline apart, 200 environments per species, 10 meV/atom) 171 % and
    25.2 %; the baseline apart with 1000 environments 38 % and 14.7 %."""
    frames, energies, forces = _boxes(16, seed=1)
    model = SoapEnergyModel().fit(frames, {"energy": energies, "forces": forces})
    e_pct, f_pct = _errors(model, *_boxes(6, seed=2))
    print(f"energy {e_pct:.1f} % of the spread, forces {f_pct:.1f} %")
    assert e_pct < 60.0
    assert f_pct < 20.0


@pytest.mark.skipif(not BOX.exists(), reason="reference water box not available")
def test_default_energy_model_learns_two_densities_at_once() -> None:
    """A second composition: 8 boxes of 32 molecules and 8 of 24 (the same cell, a quarter of the
    molecules gone) in one fit; held-out boxes of each, errors against each one's own spread.

    Measured (7 Dec 2026): 32 molecules energy 52 % of the spread, forces 17 %; 24 molecules 65 %,
    21.5 %. With an energy noise of 10 meV/atom (the default before) the force rows override the
    energies: the training boxes of each density are off by ±1.1 eV on average and the 32-molecule
    test energies by 289 % of their spread."""
    parts = [_boxes(8, seed=3, n_molecules=32), _boxes(8, seed=4, n_molecules=24)]
    frames = parts[0][0] + parts[1][0]
    model = SoapEnergyModel().fit(frames, {"energy": np.concatenate([parts[0][1], parts[1][1]]),
                                           "forces": parts[0][2] + parts[1][2]})
    for n_molecules, seed in ((32, 5), (24, 6)):
        e_pct, f_pct = _errors(model, *_boxes(4, seed=seed, n_molecules=n_molecules))
        print(f"{n_molecules} molecules: energy {e_pct:.1f} % of the spread, forces {f_pct:.1f} %")
        assert e_pct < 100.0, n_molecules
        assert f_pct < 30.0, n_molecules
