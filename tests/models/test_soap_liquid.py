"""The ``soap`` energy model at its defaults on a periodic liquid: energies and forces of held-out
boxes learned far better than predicting the mean.

Reference: flexible TIP3P-like water (ASE's TIP3P intermolecular terms with a 4.5 Å cutoff in the
periodic cell, Morse O–H bonds and harmonic H–O–H angles from ``ase.calculators.ff``), on boxes
made from the 32-molecule TIP3P snapshot of ``/work/shared/data/water-box`` by moving every molecule
(0.15 Å) and every atom (0.02 Å) at random: training and test boxes from different seeds.

Before the baseline was fitted jointly with the GPR weights and the default number of sparse
environments went from 200 to 1000 per species, the default model predicted the held-out energies
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


def _boxes(n: int, seed: int):
    """``n`` labelled boxes (atoms with ``info['energy']`` eV and ``arrays['forces']`` eV/Å)."""
    start = read(BOX)
    n_mol = len(start) // 3
    calc = _reference(n_mol)
    rng = np.random.default_rng(seed)
    frames, energies, forces = [], [], []
    for _ in range(n):
        atoms = start.copy()
        atoms.positions += np.repeat(rng.normal(scale=0.15, size=(n_mol, 3)), 3, axis=0)
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
        atoms.calc = None
        frames.append(atoms)
    return frames, np.array(energies), forces


@pytest.mark.skipif(not BOX.exists(), reason="reference water box not available")
def test_default_energy_model_learns_a_periodic_liquid() -> None:
    """16 training boxes of 32 molecules, 6 held-out boxes: energy RMSE well below the test spread,
    forces well below their spread, training energies fitted to about their noise.

    Measured (7 Dec 2026): energy 37 % of the spread of the box energies, forces 14.8 % of theirs;
    with the code before (baseline apart, 200 environments per species) 171 % and 25.2 %; the
    baseline apart with 1000 environments 38 % and 14.7 %."""
    frames, energies, forces = _boxes(16, seed=1)
    test_frames, test_e, test_f = _boxes(6, seed=2)
    model = SoapEnergyModel().fit(frames, {"energy": energies, "forces": forces})
    pred_e = model.predict(test_frames)
    pred_f = np.concatenate(model.predict_forces(test_frames))
    e_pct = 100 * np.sqrt(np.mean((pred_e - test_e) ** 2)) / np.std(test_e)
    f_y = np.concatenate(test_f)
    f_pct = 100 * np.sqrt(np.mean((pred_f - f_y) ** 2)) / np.std(f_y)
    print(f"energy {e_pct:.1f} % of the spread, forces {f_pct:.1f} %")
    assert e_pct < 60.0
    assert f_pct < 20.0
