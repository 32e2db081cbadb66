"""Writes are atomic: a writer killed (SIGKILL) at a random moment never leaves a partial file in place.

A forked child rewrites a large model file / data set / spectrum CSV over and over through the
package's own writers; the parent kills it at random moments. Afterwards the destination holds one
complete version (the previous one or a newer one) that loads, and the only possible leftovers are
the writer's hidden temporary files (``.<name>.<random>.tmp``).
"""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest

from mdplugin.core.atomicio import append_durably, atomic_write
from mdplugin.structures.data import Dataset, read_dataset, write_dataset
from mdplugin.core.errors import DataError
from mdplugin.models.base import load_model

from ..conftest import dichloroethane
from .test_model_files import MeanModel  # noqa: F401  (registers "_robust_mean")

KILLS = 4


def _big_model(version: int, size: int = 600_000):
    from mdplugin.models.base import build

    m = build("_robust_mean", shift=float(version)).fit([dichloroethane()], np.zeros((1, 3)))
    m.table_ = np.full((size // 3, 3), float(version))
    return m


def _dataset(version: int, n: int = 150) -> Dataset:
    rng = np.random.default_rng(0)
    frames = [dichloroethane(rng, noise=0.05) for _ in range(n)]
    return Dataset(frames=frames, energy=np.full(n, float(version)),
                   forces=[np.full((8, 3), float(version)) for _ in range(n)],
                   dipole=np.full((n, 3), float(version)))


def _csv_result(version: int):
    from mdplugin.spectra.compute import ir_spectrum

    t = np.arange(20_000) * 0.5
    mu = np.stack([np.sin(2 * np.pi * 0.1 * t), np.cos(2 * np.pi * 0.05 * t), np.sin(0.3 * t)], axis=1)
    return ir_spectrum([mu], dt=0.5, temperature=100.0 * (version + 1), pad=8)


def _writer(kind: str):
    """(write(version, path), check(path) -> version) for one kind of file."""
    if kind == "model":
        models = {v: _big_model(v) for v in (0, 1, 2)}

        def write(v, path):
            models[v].save(path)

        def check(path):
            m = load_model(path)
            v = int(m.shift)
            assert np.all(m.table_ == v) and m.table_.shape == models[v].table_.shape
            return v
    elif kind == "dataset":
        sets = {v: _dataset(v) for v in (0, 1, 2)}

        def write(v, path):
            write_dataset(path, sets[v])

        def check(path):
            d = read_dataset(path)
            v = int(d.energy[0])
            assert len(d) == len(sets[v].frames) and np.all(d.energy == v) and np.all(d.dipole == v)
            return v
    else:
        from mdplugin.spectra.output import csv_columns, read_csv, write_csv

        results = {v: _csv_result(v) for v in (0, 1, 2)}

        def write(v, path):
            write_csv(results[v], path)

        def check(path):
            table = read_csv(path)
            for v, res in results.items():
                names, ref = csv_columns(res)
                first = next(iter(res.components))
                if len(table["wavenumber"]) == len(ref) and np.allclose(table[first], res.components[first],
                                                                        rtol=1e-8, equal_nan=True):
                    return v
            raise AssertionError("the CSV matches no complete version")
    return write, check


def _leftovers(folder, name):
    others = sorted(p.name for p in folder.iterdir() if p.name != name)
    tmp = re.compile(rf"^\.{re.escape(name)}\..+\.tmp$")
    assert all(tmp.match(o) for o in others), others
    return others


@pytest.mark.parametrize("kind, name", [("model", "m.npz"), ("dataset", "d.xyz"), ("csv", "s.csv")])
def test_killed_writer_leaves_a_complete_file(tmp_path, kind, name):
    write, check = _writer(kind)
    path = tmp_path / name
    write(0, path)
    assert check(path) == 0
    t0 = time.perf_counter()
    write(1, path)
    one_write = time.perf_counter() - t0
    assert check(path) == 1
    rng = np.random.default_rng(hash(kind) % 2**32)
    seen, killed_mid_write = set(), 0
    for k in range(KILLS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: rewrite forever, alternating versions 2 and 1
            try:
                os.close(r)
                os.write(w, b"go")
                v = 2
                while True:
                    write(v, path)
                    v = 3 - v
            finally:
                os._exit(0)
        os.close(w)
        os.read(r, 2)
        os.close(r)
        time.sleep(float(rng.uniform(0.1, 2.5)) * one_write)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        seen.add(check(path))  # a complete version, never a partial one
        left = _leftovers(tmp_path, name)
        killed_mid_write += bool(left)
        for o in left:
            os.unlink(tmp_path / o)
    assert seen <= {1, 2}
    print(f"{kind}: one write {one_write:.3f} s; {KILLS} kills, {killed_mid_write} mid-write; versions {sorted(seen)}")


def test_exception_inside_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as fh:
            fh.write("partial")
            raise RuntimeError("disk full, say")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_unwritable_destination_names_the_destination(tmp_path):
    """Writing into a place that does not exist names the destination, not the hidden temp file."""
    target = "/proc/mdplugin-robust/out.csv"
    with pytest.raises(OSError) as err:
        with atomic_write(target) as fh:
            fh.write("x")
    assert "out.csv" in str(err.value) or getattr(err.value, "filename", None) == target
    assert ".tmp" not in str(err.value)


def test_killed_append_leaves_earlier_frames_and_a_clear_error(tmp_path):
    """append_durably (active-learning data) is not atomic: a kill mid-append leaves a partial last
    frame. The earlier frames are intact and the reader names the broken frame (documented)."""
    path = tmp_path / "data.xyz"
    write_dataset(path, _dataset(1, n=5))
    from mdplugin.structures.data import dataset_to_text

    text = dataset_to_text(_dataset(2, n=3))
    append_durably(path, text[: len(text) // 2])  # what a kill mid-append leaves
    with pytest.raises(DataError) as err:
        read_dataset(path)
    assert str(path) in str(err.value) and "frame 6" in str(err.value)
    # the five earlier frames (and the complete 6th) are still there
    good = path.read_text().splitlines(keepends=True)[: 6 * 10]
    (tmp_path / "good.xyz").write_text("".join(good))
    assert len(read_dataset(tmp_path / "good.xyz")) == 6
