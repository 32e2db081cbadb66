"""Centroid (bead-averaged) series of path-integral runs, for RPMD/TRPMD spectra.

i-PI writes one extras file per bead, ``<prefix>.<name>_<b>`` with ``b`` zero-padded to the
number of digits of the bead count (``ipi.engine.outputs.TrajectoryOutput.open_stream``). The
spectrum of a (thermostatted) ring-polymer MD run is the one of the centroid's dipole and
polarizability, the average over the beads at every step:

    μ_c(t) = (1/P) Σ_b μ_b(t),    α_c(t) = (1/P) Σ_b α_b(t)

:func:`centroid_series` checks that the files are whole runs of ``P`` beads (the count asked for,
the bead indices and the zero padding of their names, the same steps in every bead) and averages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, DataError
from .readers import _EXTRAS_HEADER, _is_ipi_extras, read_series

_BEAD = re.compile(r"^(.*)_(\d+)$")


def _steps(path: Path) -> np.ndarray | None:
    """The step numbers of an i-PI extras file (None for other files)."""
    if not _is_ipi_extras(path):
        return None
    return np.array([int(m.group(2)) for m in _EXTRAS_HEADER.finditer(path.read_text(errors="replace"))])


def _bead_of(path: Path, n_beads: int) -> tuple[str, int] | None:
    """``(prefix, bead index)`` of an i-PI bead file name, or None when the name has no ``_<b>`` suffix;
    a suffix padded to another width than ``n_beads`` gives is a :class:`DataError`."""
    m = _BEAD.match(path.name)
    if not m:
        return None
    digits = int(1 + np.floor(np.log10(n_beads)))  # i-PI's padding
    if len(m.group(2)) != digits:
        raise DataError(f"{path}: its bead suffix _{m.group(2)} is padded to {len(m.group(2))} digit(s), so it comes "
                        f"from a run whose bead count has {len(m.group(2))} digit(s), not the {n_beads} beads of "
                        f"--centroid {n_beads}")
    return m.group(1), int(m.group(2))


def centroid_series(paths: list, quantity: str, n_beads: int, key: str | None = None, units: str = "ase",
                    cell_dipole: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The centroid series of path-integral runs and their names.

    ``paths``: the per-bead files of one or more runs, ``n_beads`` consecutive files per run (any
    format :func:`read_series` reads; i-PI extras files are checked for their step numbers and
    bead names). Returns ``(series, names)``: one bead-averaged series per run, dipoles (n, 3) e·Å
    or polarizabilities (n, 3, 3) Å³, named after the run (the common file prefix).

    Raises :class:`DataError` naming the files when they are not whole runs of ``n_beads`` beads
    (a count that does not divide, a bead index missing or repeated, a name padded for another
    bead count) or when the beads of a run disagree in their number of frames or steps.
    """
    if not (isinstance(n_beads, (int, np.integer)) and n_beads >= 1):
        raise ConfigError(f"--centroid must be a whole number of beads of at least 1, got {n_beads!r}")
    paths = [Path(p) for p in paths]
    if len(paths) % n_beads:
        raise DataError(f"--centroid {n_beads}: {len(paths)} bead file(s) ({_list(paths)}) are not whole runs of "
                        f"{n_beads} beads (give the {n_beads} files <name>_0 … <name>_{n_beads - 1} of every run)")
    series, names = [], []
    for start in range(0, len(paths), n_beads):
        run = paths[start:start + n_beads]
        beads = [_bead_of(p, n_beads) for p in run]
        if all(b is not None for b in beads):
            prefixes = {b[0] for b in beads}
            indices = sorted(b[1] for b in beads)
            if len(prefixes) > 1 or indices != list(range(n_beads)):
                raise DataError(f"--centroid {n_beads}: {_list(run)} are not the beads 0-{n_beads - 1} of one run "
                                f"(prefixes {', '.join(sorted(prefixes))}; beads {', '.join(map(str, indices))})")
            name = os.fspath(run[0].parent / prefixes.pop())
        else:
            name = os.fspath(run[0])
        values = [read_series(p, quantity, key=key, units=units, cell_dipole=cell_dipole) for p in run]
        lengths = [len(v) for v in values]
        if len(set(lengths)) > 1:
            raise DataError(f"--centroid {n_beads}: the beads of {name} disagree in length: "
                            + ", ".join(f"{p.name} {n} frames" for p, n in zip(run, lengths))
                            + " (a run still writing, or files of different runs?)")
        steps = [_steps(p) for p in run]
        if all(s is not None for s in steps):
            first = steps[0]
            for p, s in zip(run[1:], steps[1:]):
                if not np.array_equal(s, first):
                    i = int(np.argmax(s != first))
                    raise DataError(f"--centroid {n_beads}: {p} and {run[0]} are not beads of the same steps "
                                    f"(frame {i}: step {s[i]} against {first[i]})")
        series.append(np.mean(values, axis=0))
        names.append(name)
    return series, names


def _list(paths: list) -> str:
    names = [os.fspath(p) for p in paths]
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]} … {names[-1]}"
