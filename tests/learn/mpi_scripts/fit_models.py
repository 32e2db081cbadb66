"""Fit small energy and λ-SOAP models with ``comm=get_comm()`` (run under ``mpiexec -n P``).

Usage: ``python fit_models.py DATA.xyz N_FRAMES CHUNK OUT_DIR``; rank 0 writes
``OUT_DIR/{energy,dipole,polarizability}.npz`` and every rank writes
``OUT_DIR/check.rank{r}.npz`` with its predictions (to check all ranks hold the same model).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mdplugin.structures.data import read_dataset
from mdplugin.models import build
from mdplugin.learn.parallel import get_comm

#: small hyper-parameters shared with tests/learn/test_mpi.py (a fit takes a second)
HYPERS = {
    "energy": dict(model="soap", n_sparse=30),
    "dipole": dict(model="lsoap", n_sparse=20, n_sparse_l0=40, max_radial=3, max_angular=3, n_components=24),
    "polarizability": dict(model="lsoap", n_sparse=20, n_sparse_l0=40, max_radial=3, max_angular=3,
                           n_components=24),
}


def fit(target: str, data, chunk: int, comm=None):
    hypers = dict(HYPERS[target])
    model = build(hypers.pop("model"), target=target, chunk_size=chunk, **hypers)
    if target == "energy":
        return model.fit(data.frames, {"energy": data.energy, "forces": data.forces}, comm=comm)
    return model.fit(data.frames, data.get(target), comm=comm)


def main() -> None:
    path, n, chunk, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    comm = get_comm()
    data = read_dataset(path).subset(np.arange(n))
    check = {}
    for target in HYPERS:
        model = fit(target, data, chunk, comm)
        if comm.rank == 0:
            model.save(out / f"{target}.npz")
        check[target] = model.predict(data.frames[:10])
    np.savez(out / f"check.rank{comm.rank}.npz", size=comm.size, **check)


if __name__ == "__main__":
    main()
