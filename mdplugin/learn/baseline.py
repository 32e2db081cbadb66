"""Per-species composition baselines, shared by the energy and λ-SOAP models.

A property that grows with the number of atoms (an energy, the trace of a polarizability) is
first fitted as ``Σ_species count · w_species`` by ridge least squares; the GPR learns the rest.
"""

from __future__ import annotations

import numpy as np


def composition(species: np.ndarray, frame: np.ndarray, n_frames: int, species_list: np.ndarray) -> np.ndarray:
    """Atoms of every species of the sorted ``species_list`` (n_s,) in every frame: (n_frames, n_s)
    floats, from the species and frames (n,) of the atoms."""
    n_species = len(species_list)
    cell = np.asarray(frame) * n_species + np.searchsorted(species_list, species)
    return np.bincount(cell, minlength=n_frames * n_species).reshape(n_frames, n_species).astype(float)


def fit_baseline(comp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-species weights (n_s,) of the composition ``comp`` (n_frames, n_s) for the targets ``y``
    (n_frames,): ridge least squares with a ridge of 1e-8 × tr(CᵀC), so that species that always
    occur together (one molecule) still give a unique answer."""
    gram = comp.T @ comp
    ridge = 1e-8 * max(np.trace(gram), 1.0)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), comp.T @ y)
