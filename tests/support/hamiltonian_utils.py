"""A small real hamiltonian model for the engine tests: distorted waters labelled with PySCF
(HF/STO-3G, a few seconds) and fitted with light hyper-parameters."""

from __future__ import annotations

from pathlib import Path

from ase.build import molecule

from mdplugin.structures.distortions import random_distortions

LIGHT = dict(cutoff=4.0, max_radial=5, max_angular=4, density_width=0.2, pair_max_angular=3, density_channels=10,
             n_samples=16)


def distorted_waters(n: int, seed: int = 0, scale: float = 0.06):
    return random_distortions(molecule("H2O"), n, scale=scale, seed=seed)


def water_hamiltonian_model(folder: Path, n: int = 40) -> Path:
    """``folder/water_h.npz``: a hamiltonian model of n HF/STO-3G waters."""
    from mdplugin.models import build
    from mdplugin.oracles.hamiltonian import label_hamiltonians

    frames = distorted_waters(n)
    path = Path(folder) / "water_h.npz"
    build("hamiltonian", target="hamiltonian", **LIGHT).fit(frames, label_hamiltonians(frames, xc="hf")).save(path)
    return path
