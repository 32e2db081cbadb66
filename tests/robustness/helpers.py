"""Shared pieces of the robustness suite: a valid labelled file, a scratch folder per example."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from hypothesis import HealthCheck, settings

from mdplugin.structures.data import Dataset, dataset_to_text

from ..conftest import dichloroethane

#: hypothesis settings of the suite: few examples, no deadline (the machine may be loaded)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
QUICK = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

N_FRAMES = 3
N_ATOMS = 8


def labelled(n: int = N_FRAMES, seed: int = 0) -> Dataset:
    """``n`` displaced dichloroethane frames with energy, forces, dipole and a symmetric polarizability."""
    rng = np.random.default_rng(seed)
    frames = [dichloroethane(rng, noise=0.05) for _ in range(n)]
    alpha = rng.normal(size=(n, 3, 3))
    return Dataset(
        frames=frames,
        energy=rng.normal(size=n),
        forces=[rng.normal(size=(N_ATOMS, 3)) for _ in range(n)],
        dipole=rng.normal(size=(n, 3)),
        polarizability=alpha + alpha.transpose(0, 2, 1) + 10 * np.eye(3),
    )


#: the extended-XYZ text of :func:`labelled` (3 frames, 8 atoms each, all four labels)
VALID_TEXT = dataset_to_text(labelled())


def frame_lines(text: str = VALID_TEXT) -> list[list[str]]:
    """The lines of each frame of an extended-XYZ text (header, comment, atoms)."""
    lines = text.splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines):
        n = int(lines[i])
        out.append(lines[i : i + n + 2])
        i += n + 2
    return out


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder for one hypothesis example (function-scoped tmp_path is shared by examples)."""
    with tempfile.TemporaryDirectory(prefix="mdplugin-robust-") as d:
        yield Path(d)


def one_error_line(err: str) -> str:
    """The single ``mdplugin: error: ...`` line of a command's stderr (asserts there is exactly one)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("mdplugin: error: "), lines[0]
    assert "Traceback" not in err
    return lines[0]
