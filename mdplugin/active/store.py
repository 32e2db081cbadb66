"""The run folder of an active-learning run, written so that a kill at any moment loses nothing.

``RUN_DIR/``

* ``data.xyz`` — every labelled frame (extended XYZ, ASE units, labels in ``info``/``arrays`` as
  :func:`mdplugin.structures.data.read_dataset` reads them) plus ``active_hash`` (structure key),
  ``active_step`` and ``active_origin``. A frame is appended and fsync'ed *before* it is used;
  a frame cut short by a kill is dropped on the next open (it was never reported written).
* ``refused.xyz`` — labelled frames an exploring run refused (oracle energy far above the labelled
  set: a hole of a young energy model, :mod:`mdplugin.active.explore`), same format, origin
  ``refused``: they count as oracle calls and are never labelled again, but are not training data.
* ``log.csv`` — one row per event, appended and fsync'ed (see :data:`LOG_COLUMNS`).
* ``state.npz`` — the last trusted MD state (positions Å, momenta in ASE units), counters and the
  random generator's state (JSON metadata inside), replaced atomically.
* ``config.json`` — the run's settings (atomic); ``<target>.npz`` — the current models (atomic).

Under MPI (several ranks) only rank 0's store writes (``RunStore(run_dir, writer=False)`` on the
others keeps the structure keys and counts in memory and touches no file); frames labelled from
another rank's walker carry ``active_rank``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

import ase.io
import numpy as np
from ase import Atoms

from ..core.atomicio import append_durably, atomic_write
from ..structures.data import Dataset, read_dataset
from ..core.errors import DataError

#: columns of log.csv, in order
LOG_COLUMNS = (
    "event", "step", "oracle_calls", "n_train", "uncertainty",
    "u_energy", "u_dipole", "u_polarizability",
    "err_energy", "err_forces", "err_dipole", "err_polarizability",
    "thr_energy", "thr_dipole", "thr_polarizability",
    "train_time_s", "wall_time_s", "note",
)

_HASH_RE = re.compile(r"active_hash=(\w+)")
_ORIGIN_RE = re.compile(r"active_origin=(\w+)")


def structure_hash(atoms: Atoms) -> str:
    """A key of a structure: SHA-1 of its atomic numbers and positions (float64 bytes), 16 hex digits."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def frame_text(atoms: Atoms, labels: dict[str, np.ndarray], key: str, step: int, origin: str,
               rank: int | None = None) -> str:
    """Extended-XYZ text of one labelled frame (labels in ASE units); ``rank``: the MPI rank whose
    walker found the structure (recorded as ``active_rank`` when given)."""
    a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    for name, value in labels.items():
        v = np.asarray(value, dtype=float)
        if name == "forces":
            a.arrays["forces"] = v.reshape(len(a), 3)
        elif name == "energy":
            a.info["energy"] = float(v)
        else:
            a.info[name] = v.reshape(-1)
    a.info["active_hash"] = key
    a.info["active_step"] = int(step)
    a.info["active_origin"] = origin
    if rank is not None:
        a.info["active_rank"] = int(rank)
    buf = io.StringIO()
    ase.io.write(buf, a, format="extxyz", parallel=False)
    return buf.getvalue()


def _complete_frames_length(text: str) -> tuple[int, list[str]]:
    """Length (characters) of the leading complete frames of an XYZ text, and their comment lines."""
    pos, comments = 0, []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        if not head:
            break
        try:
            n = int(head)
        except ValueError:
            break
        block = lines[i : i + n + 2]
        if len(block) < n + 2 or not all(line.endswith("\n") for line in block):
            break
        if any(len(line.split()) < 4 for line in block[2:]):
            break
        comments.append(block[1])
        pos += sum(len(line) for line in block)
        i += n + 2
    return pos, comments


class RunStore:
    """Files of one run folder (see the module docstring).

    ``writer=False`` (MPI ranks other than 0): no file is read or written; :meth:`append_frame`
    only records the key and origin (the keys come from rank 0 through :meth:`set_keys`).
    """

    def __init__(self, run_dir: str | os.PathLike, writer: bool = True) -> None:
        self.writer = writer
        self.dir = Path(run_dir)
        self.data_path = self.dir / "data.xyz"
        self.log_path = self.dir / "log.csv"
        self.state_npz = self.dir / "state.npz"
        self.config_path = self.dir / "config.json"
        self.refused_path = self.dir / "refused.xyz"
        self.hashes: set[str] = set()
        self.origins: dict[str, int] = {}  # labelled frames per origin (initial, reference, md)

    # --- data ------------------------------------------------------------------------------
    def open(self) -> int:
        """Create the folder, drop a frame cut short by a kill, load the structure keys.

        Returns the number of complete labelled frames in ``data.xyz`` (0 without ``writer``).
        """
        if not self.writer:
            return 0
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.data_path.exists():
            self.data_path.touch()
        text = self.data_path.read_text()
        length, comments = _complete_frames_length(text)
        if length != len(text):  # a torn frame at the end: it was never reported written
            rest = text[length:]
            if _complete_frames_length(rest.lstrip())[1]:
                # complete frames follow the damaged spot: this is not a torn tail, never delete labels
                line = text.count("\n", 0, length) + 1
                raise DataError(f"{self.data_path}: line {line}: unexpected content between labelled frames "
                                f"(a blank or malformed line?); fix the file by hand, no labels were dropped")
            with atomic_write(self.data_path) as fh:
                fh.write(text[:length])
        self.hashes = set()
        self.origins = {}
        for c in comments:
            m = _HASH_RE.search(c)
            if m:
                self.hashes.add(m.group(1))
            m = _ORIGIN_RE.search(c)
            origin = m.group(1) if m else "initial"
            self.origins[origin] = self.origins.get(origin, 0) + 1
        self._open_refused()
        if self.log_path.exists():
            self._repair_log()
        return len(comments)

    def _open_refused(self) -> None:
        """Count the frames of ``refused.xyz`` (origin ``refused``) and keep their keys; a frame cut
        short by a kill is dropped (it was never reported written)."""
        if not self.refused_path.exists():
            return
        text = self.refused_path.read_text()
        length, comments = _complete_frames_length(text)
        if length != len(text):
            with atomic_write(self.refused_path) as fh:
                fh.write(text[:length])
        for c in comments:
            m = _HASH_RE.search(c)
            if m:
                self.hashes.add(m.group(1))
        if comments:
            self.origins["refused"] = len(comments)

    def append_refused(self, atoms: Atoms, labels: dict[str, np.ndarray], step: int, key: str,
                       rank: int | None = None) -> None:
        """Append a refused labelled frame to ``refused.xyz`` (fsync): an oracle call, never training data."""
        if key in self.hashes:
            return
        if self.writer:
            append_durably(self.refused_path, frame_text(atoms, labels, key, step, "refused", rank))
        self.hashes.add(key)
        self.origins["refused"] = self.origins.get("refused", 0) + 1

    def has(self, key: str) -> bool:
        return key in self.hashes

    def keys(self) -> tuple[list[str], dict[str, int]]:
        """The structure keys (sorted) and the frame counts per origin (to share with other ranks)."""
        return sorted(self.hashes), dict(self.origins)

    def set_keys(self, keys: tuple[list[str], dict[str, int]]) -> None:
        """Take the keys and counts of :meth:`keys` (of rank 0's store)."""
        self.hashes, self.origins = set(keys[0]), dict(keys[1])

    def append_frame(self, atoms: Atoms, labels: dict[str, np.ndarray], step: int, origin: str,
                     key: str | None = None, rank: int | None = None) -> str:
        """Append one labelled frame to ``data.xyz`` and fsync; returns its structure key."""
        key = key or structure_hash(atoms)
        if key in self.hashes:
            return key
        if self.writer:
            append_durably(self.data_path, frame_text(atoms, labels, key, step, origin, rank))
        self.hashes.add(key)
        self.origins[origin] = self.origins.get(origin, 0) + 1
        return key

    def read_data(self, properties: Iterable[str]) -> Dataset:
        """The labelled frames (an empty :class:`Dataset` when there are none)."""
        if not self.data_path.exists() or self.data_path.stat().st_size == 0:
            return Dataset(frames=[], source=str(self.data_path))
        return read_dataset(self.data_path, properties=list(properties))

    # --- log -------------------------------------------------------------------------------
    def _repair_log(self) -> None:
        text = self.log_path.read_text()
        if text and not text.endswith("\n"):  # a row cut short by a kill
            with atomic_write(self.log_path) as fh:
                fh.write(text[: text.rfind("\n") + 1])

    def log(self, **row: Any) -> None:
        """Append one event row to ``log.csv`` (header first if the file is new) and fsync."""
        unknown = set(row) - set(LOG_COLUMNS)
        if unknown:
            raise DataError(f"log.csv: unknown column(s) {', '.join(sorted(unknown))}")
        if not self.writer:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if not self.log_path.exists() or self.log_path.stat().st_size == 0:
            writer.writerow(LOG_COLUMNS)
        writer.writerow([_fmt(row.get(c, "")) for c in LOG_COLUMNS])
        append_durably(self.log_path, buf.getvalue())

    def read_log(self) -> list[dict[str, str]]:
        if not self.log_path.exists():
            return []
        with open(self.log_path, newline="") as fh:
            return list(csv.DictReader(fh))

    # --- config and state ------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        if not self.writer:
            return
        with atomic_write(self.config_path) as fh:
            json.dump(config, fh, indent=1, sort_keys=True)

    def read_config(self) -> dict:
        if not self.config_path.exists():
            raise DataError(f"{self.dir}: not an active-learning run folder (no config.json)")
        return json.loads(self.config_path.read_text())

    def write_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Checkpoint: arrays and the JSON metadata in one ``state.npz``, replaced atomically."""
        if not self.writer:
            return
        with atomic_write(self.state_npz, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta, sort_keys=True)), **arrays)

    def read_state(self) -> tuple[dict, dict[str, np.ndarray]] | None:
        """The last checkpoint ``(meta, arrays)``, or ``None`` if there is none."""
        if not self.state_npz.exists():
            return None
        with np.load(self.state_npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("__meta__")))
        return meta, arrays

    def model_path(self, target: str) -> Path:
        return self.dir / f"{target}.npz"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{float(value):.6g}"
    return str(value)
