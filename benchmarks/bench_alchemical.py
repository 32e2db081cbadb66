"""Alchemical compression: λ-SOAP feature counts, memory per atom and time against full species
channels, for the seven elements of the many-element benchmark (H, C, N, O, F, S, Cl) with the lsoap
defaults (5 radial functions, l ≤ 3). Prints a markdown table.

Usage: python benchmarks/bench_alchemical.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ase.build import molecule  # noqa: E402

from mdplugin.features.alchemical import AlchemicalChannels  # noqa: E402
from mdplugin.features.expansion import SphericalExpansion  # noqa: E402
from mdplugin.features.lambda_soap import lambda_soap, n_features  # noqa: E402

SPECIES = [1, 6, 7, 8, 9, 16, 17]
NAMES = ["CH3CH2Cl", "CH3COF", "C2H6SO", "CH3CONH2", "C4H4S", "HCOOCH3", "CH3CH2SH", "C5H5N"]


def main() -> None:
    calc = SphericalExpansion(SPECIES)  # lsoap defaults: 5 Å, max_radial 4, max_angular 3
    frames = [molecule(n) for n in NAMES] * 8
    exp = calc.compute(frames)
    n_atoms = exp.n_centres
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {os.getloadavg()[0]:.1f}; "
          f"{len(SPECIES)} elements, {n_atoms} atoms of {len(NAMES)} g2 molecules (×8)")
    print("| channels | features λ=0 | λ=1 (×3) | λ=2 (×5) | memory per atom, λ = 0, 1, 2 | λ-SOAP time per atom | time ratio |")
    print("|---|---|---|---|---|---|---|")
    reference = None
    for k in (len(SPECIES), 4, 3, 2, 1):
        mapped = exp if k == len(SPECIES) else AlchemicalChannels(SPECIES, k).fit(exp).transform(exp)
        p = mapped.values[0].shape[-1]
        counts = [n_features(lam, 3, p) for lam in (0, 1, 2)]
        memory = 8 * sum(c * (2 * lam + 1) for lam, c in enumerate(counts))
        best = np.inf
        for _ in range(3):
            start = time.perf_counter()
            lambda_soap(mapped, (0, 1, 2))
            best = min(best, time.perf_counter() - start)
        reference = reference or best
        label = f"{k} (full)" if k == len(SPECIES) else f"{k} pseudo-species"
        print(f"| {label} | {counts[0]} | {counts[1]} | {counts[2]} | {memory / 1024:.0f} kB | "
              f"{1e6 * best / n_atoms:.0f} µs | {best / reference:.3f} |", flush=True)


if __name__ == "__main__":
    main()
