"""Opening an active-learning run: the oracle, the start structure, a new or resumed run folder."""

from __future__ import annotations

import io
from pathlib import Path

import ase.io
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..core.atomicio import atomic_write
from ..structures.data import Dataset, read_dataset
from ..core.errors import ConfigError, DataError
from ..oracles.label import oracle_factory, oracle_maker, resolve_oracle
from .config import TARGETS, ActiveConfig
from .lock import LOCK_NAME
from .store import RunStore, _complete_frames_length

__all__ = ["check_initial", "discard_failed_start", "holds_labels", "open_folder", "oracle_factory", "read_start",
           "resolve_oracle"]


def read_start(start: str | Path | Atoms) -> Atoms:
    """The start structure (first frame of a file ASE reads, or a copy of ``start``): numbers,
    positions (Å), cell and pbc only."""
    if isinstance(start, Atoms):
        return Atoms(numbers=start.numbers, positions=start.positions, cell=start.cell, pbc=start.pbc)
    if not Path(start).exists():  # the same message as every other command's
        raise DataError(f"{start}: no such file")
    if Path(start).is_dir():
        raise DataError(f"{start}: is a folder, not a structure file")
    try:
        atoms = ase.io.read(start, index=0, parallel=False)
    except Exception as exc:
        raise DataError(f"{start}: cannot read the start structure: {exc}") from None
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


#: files a run writes in its folder (the models as ``<target>.npz``)
RUN_FILES = ("config.json", "start.xyz", "data.xyz", "log.csv", "state.npz", "active.png", LOCK_NAME,
             *(f"{t}.npz" for t in TARGETS))


def holds_labels(run_dir: Path) -> bool:
    """Whether ``run_dir/data.xyz`` holds at least one complete labelled frame."""
    data = Path(run_dir) / "data.xyz"
    return data.exists() and bool(_complete_frames_length(data.read_text())[1])


def _unlabelled_leftover(run_dir: Path) -> bool:
    """A run folder left by a start that failed (or was killed) before its first label: config.json
    but no label and no checkpoint. A new start may take its place."""
    return not (run_dir / "state.npz").exists() and not holds_labels(run_dir)


def discard_failed_start(run_dir: str | Path, before: set[str] | None) -> None:
    """Remove what a failed start created in ``run_dir`` (the run's own files that were not in
    ``before``, then the folder itself if ``before`` is ``None``: it did not exist and is now empty).
    Does nothing when the folder holds a label: labels are never removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or holds_labels(run_dir):
        return
    for name in RUN_FILES:
        path = run_dir / name
        if (before is None or name not in before) and path.is_file():
            path.unlink()
    if before is None:
        try:
            run_dir.rmdir()
        except OSError:  # something else is in it: leave it
            pass


def check_initial(initial: str | Path | Dataset | None, config: ActiveConfig) -> Dataset | None:
    """The initial labelled frames (read from a file), checked to have every label the run needs."""
    if initial is None:
        return None
    data = initial if isinstance(initial, Dataset) else read_dataset(initial, properties=config.labels())
    missing = [p for p in config.labels() if not data.has(p)]
    if missing:
        raise DataError(f"{data.source}: initial data lack {', '.join(missing)} labels")
    if len(data) == 0:
        raise DataError(f"{data.source}: no initial frames")
    return data


def open_folder(store: RunStore, start: str | Path | Atoms | None, config: ActiveConfig | None,
                oracle: str | Calculator | None, initial: str | Path | Dataset | None, resume: bool,
                overrides: dict | None, size: int
                ) -> tuple[dict, str | None, Atoms, str | Path | None, Dataset | None]:
    """Create or reopen the run folder (rank 0 only; arguments as :func:`run_active`'s, ``size``
    the number of MPI ranks). Returns (config dict, oracle name or ``None`` for an object, start
    structure, initial data spec: a file name or ``None``, the initial frames read and checked:
    a new run only, else ``None``).

    A new run checks its inputs (start structure, oracle, initial data) before it creates anything;
    a folder left by a start that failed before its first label (config.json, no label, no
    checkpoint) is taken over."""
    run_dir = store.dir
    data = None
    if resume:
        saved = store.read_config()
        cfg_dict = dict(saved["config"])
        cfg_dict.update({k: v for k, v in (overrides or {}).items() if v is not None})
        config = ActiveConfig.from_dict(cfg_dict)
        if size > 1 and not config.segment:
            raise ConfigError(f"active: {size} MPI ranks need segment mode (the run in {run_dir} has segment = 0)")
        if oracle is None:
            oracle = saved.get("oracle")
            if oracle is None:
                raise ConfigError(f"{run_dir}: the run's oracle was a Python object: pass it again (oracle=...)")
        start_atoms = read_start(run_dir / "start.xyz")
        saved["config"] = config.to_dict()
        store.write_config(saved)
        if initial is None:
            initial = saved.get("initial")
    else:
        leftover = (run_dir / "config.json").exists()
        if leftover and not _unlabelled_leftover(run_dir):
            raise ConfigError(f"{run_dir}: already holds an active-learning run (use --resume to continue it)")
        if start is None:
            raise ConfigError("active: a start structure is needed")
        config = config or ActiveConfig()
        if size > 1 and not config.segment:
            raise ConfigError(f"active: {size} MPI ranks need segment mode (--segment N, ActiveConfig(segment=N))")
        oracle = "tblite" if oracle is None else oracle
        start_atoms = read_start(start)
        oracle_maker(oracle)  # checked (a factory imported, not called) before the folder is made
        data = check_initial(initial, config)
        if leftover:
            discard_failed_start(run_dir, set())
        run_dir.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        ase.io.write(buf, start_atoms, format="extxyz", parallel=False)
        with atomic_write(run_dir / "start.xyz") as fh:
            fh.write(buf.getvalue())
        store.write_config({"config": config.to_dict(),
                            "oracle": oracle if isinstance(oracle, str) else None,
                            "initial": str(initial) if isinstance(initial, (str, Path)) else None})
    store.open()
    return config.to_dict(), (oracle if isinstance(oracle, str) else None), start_atoms, \
        (initial if not isinstance(initial, Dataset) else None), data
