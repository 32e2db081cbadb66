"""The model contract, the registry, and model files.

The contract every model follows (docs/models.md, docs/architecture.md):

* **Parameters.** A model is a scikit-learn estimator (:class:`sklearn.base.BaseEstimator`):
  hyper-parameters are the ``__init__`` arguments (JSON-serialisable, no work in ``__init__``),
  ``get_params``/``set_params`` (an unknown name is a ``ValueError`` listing the valid ones),
  ``sklearn.base.clone`` (an unfitted copy with equal parameters) and a ``repr`` of the
  parameters that differ from their defaults. Learned state lives in attributes ending in ``_``.
* **Fit.** ``fit(frames, targets, *, comm=None) -> self``: ``frames`` a list of ``ase.Atoms``;
  ``targets`` a :class:`~mdplugin.models.contract.Targets`, a mapping with its keys
  (``{"energy": e, "forces": f}``), or a bare array taken as the model's own target
  (``model.fit(frames, dipoles)``); ``comm`` an mpi4py communicator shared by ranks that all pass
  the same data (models that cannot split the work fit on every rank; every rank ends with the
  serial model).
* **Predict.** ``predict(frames, return_std=False)``: the target, (n,) eV, (n, 3) e·Å or
  (n, 3, 3) Å³, and with ``return_std`` also its standard deviation (same shape and units); energy
  models also ``predict_forces(frames)`` (a list of (n_atoms, 3) eV/Å).
* **Features.** ``featurizer()`` returns the features-layer object the model predicts from (a
  :class:`~mdplugin.features.expansion.SphericalExpansion`, :class:`~mdplugin.features.inertia.PrincipalAxes`,
  or :class:`~mdplugin.features.identity.Identity`); its ``compute(frames, gradients=False)`` makes
  the features, and featurizers that compare equal make the same ones. The ASE calculator groups
  models by featurizer, computes one set of features per structure (with position gradients when
  forces are asked) and hands it to ``predict_from_features(features, *, return_std=False,
  forces=False, stress=False, precision="double")``, which returns a
  :class:`~mdplugin.models.contract.Prediction` for every model.

Targets and shapes (ASE units): ``"energy"`` (n,) eV [forces list of (n_atoms, 3) eV/Å],
``"dipole"`` (n, 3) e·Å, ``"polarizability"`` (n, 3, 3) Å³.

Model files are ``.npz`` archives of plain arrays plus one JSON metadata string, loaded with
``allow_pickle=False`` (opening a model file never runs code), written atomically, and protected by
a SHA-256 checksum of the arrays.

Import cost: deriving from ``BaseEstimator`` imports ``sklearn.base`` (and with it ``scipy.stats``),
which adds 0.9-1.3 s to a process that already has numpy, scipy and ASE (``python -X importtime -c
"import numpy, scipy, ase, sklearn.base"``, 7 Dec 2026, commit d191885, load 1.2-1.7 on 2 cores;
5.3 s at load 9); ``mdplugin md --help`` took 0.25 s without it and 1.2-1.6 s with it (best of 5,
same conditions). So nothing on the way to the command-line parser imports this module:
``mdplugin`` imports its layers on first use and the CLI imports the models inside the commands that
need them (``md --help``, ``spectrum`` and ``label`` never import scikit-learn;
tests/models/test_model_files.py checks the parser). Commands that use models pay it once per
process (each MPI rank at the same time).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from sklearn.base import BaseEstimator  # 0.9-1.3 s of import: see the module docstring

from ..core.atomicio import atomic_write
from ..core.errors import ConfigError, DataError, ModelFileError
from ..core.precision import TENSOR_PRECISIONS  # noqa: F401  (re-exported: older scripts import it here)
from ..core.version import __version__
from ..features.identity import Identity
from .contract import Prediction, Targets

FORMAT = "mdplugin-model"
FORMAT_VERSION = 1
_META_KEY = "__metadata__"

#: registry name -> module that defines it (imported on first use)
_MODULES = {
    "rpr": "mdplugin.models.rpr",
    "lsoap": "mdplugin.models.lsoap",
    "soap": "mdplugin.models.soap",
    "hamiltonian": "mdplugin.models.hamiltonian",
    "lode": "mdplugin.models.lode",
}
_REGISTRY: dict[str, type["Model"]] = {}

TARGETS = ("energy", "dipole", "polarizability")
UNITS = {"energy": "eV", "forces": "eV/Å", "dipole": "e·Å", "polarizability": "Å³", "hamiltonian": "eV"}


def register(name: str):
    """Class decorator adding a model class to the registry under ``name``."""

    def deco(cls):
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_model_class(name: str) -> type["Model"]:
    """The model class registered as ``name`` (imports its module on demand)."""
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        known = ", ".join(sorted(set(_MODULES) | set(_REGISTRY)))
        raise ConfigError(f"unknown model kind {name!r} (known: {known})")
    return _REGISTRY[name]


def build(name: str, **hypers) -> "Model":
    """A new, unfitted model of kind ``name`` with the given hyper-parameters (a ``target`` the
    model cannot learn is a :class:`ConfigError` here, before any data is read)."""
    cls = get_model_class(name)
    unknown_hyper(name, cls, hypers)
    try:
        model = cls(**hypers)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    if "target" in hypers:
        model._check_target()
    return model


def unknown_hyper(name: str, cls: type, hypers: dict) -> None:
    """Raise a :class:`ConfigError` naming the first hyper-parameter ``cls`` does not take, the
    closest valid name and all valid names (e.g. ``cutof`` -> ``cutoff``)."""
    import difflib

    valid = [p for p in cls._get_param_names() if p != "target"]
    for key in hypers:
        if key != "target" and key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"model {name!r} has no hyper-parameter {key!r}; {hint}valid: {', '.join(valid)}")


def check_species(frames: Sequence[Atoms], known: Sequence[int], what: str = "model") -> None:
    """Raise a :class:`DataError` naming elements absent from ``known`` (and the first frame)."""
    known_set = set(int(z) for z in known)
    for i, atoms in enumerate(frames):
        extra = set(np.unique(atoms.numbers).tolist()) - known_set
        if extra:
            names = ", ".join(chemical_symbols[z] for z in sorted(extra))
            trained = ", ".join(chemical_symbols[z] for z in sorted(known_set))
            raise DataError(f"frame {i}: element(s) {names} not in the {what}'s training set ({trained})")


def fingerprint(frames: Sequence[Atoms], y=None) -> str:
    """A short SHA-256 fingerprint of training structures (and targets)."""
    h = hashlib.sha256()
    for atoms in frames:
        h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    if y is not None:
        for part in (y if isinstance(y, (list, tuple)) else [y]):
            h.update(np.ascontiguousarray(np.asarray(part, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _meta_checksum(meta: dict) -> str:
    """SHA-256 of the metadata itself (every field but ``meta_checksum``), so edits are detected."""
    body = {k: v for k, v in meta.items() if k != "meta_checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class Model(BaseEstimator):
    """Base class of every mdplugin model (see the module docstring for the contract).

    A subclass defines ``targets_supported``, ``__init__`` (hyper-parameters only), :meth:`fit`,
    :meth:`predict`, :meth:`_get_state` and :meth:`_set_state`; a model with its own features
    also :meth:`featurizer` and :meth:`predict_from_features` (the defaults hand it the structures
    themselves and call :meth:`predict`).
    """

    kind: ClassVar[str] = "base"
    targets_supported: ClassVar[tuple[str, ...]] = ()
    #: whether :meth:`predict_from_features` gives the stress of periodic cells (``stress=True``)
    gives_stress: ClassVar[bool] = False
    #: what a fitted model also gives besides its target (it then serves those calculator slots,
    #: ``predict_from_features(..., target=name)``): the hamiltonian model's dipole and polarizability
    derived_targets: ClassVar[tuple[str, ...]] = ()

    # --- to implement -------------------------------------------------------------------------
    def fit(self, frames: Sequence[Atoms], targets, *, comm=None) -> "Model":  # pragma: no cover - interface
        """Fit on ``frames`` and ``targets`` (:class:`Targets`, a mapping, or the target's array)."""
        raise NotImplementedError

    def predict(self, frames: Sequence[Atoms], return_std: bool = False):  # pragma: no cover
        raise NotImplementedError

    def _get_state(self) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        """Learned arrays (plain numeric/str numpy arrays, no objects)."""
        raise NotImplementedError

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    # --- features (defaults for models that compute from the structures themselves) -----------
    def featurizer(self):
        """The features-layer object this model predicts from (``compute(frames, gradients=False)``
        makes the features; equal featurizers make the same ones). Default: the structures
        themselves (:class:`~mdplugin.features.identity.Identity`)."""
        return Identity()

    def predict_from_features(self, features, *, return_std: bool = False, forces: bool = False,
                              stress: bool = False, precision: str = "double") -> Prediction:
        """The prediction for the structures of ``features`` (made by :meth:`featurizer`).

        ``forces`` (energy models; the features need position gradients), ``stress`` (energy
        models whose :attr:`gives_stress` is true, for periodic cells), ``return_std`` the standard deviation;
        ``precision`` ``"double"`` or ``"single"`` for the models whose large products can run in
        float32 (others compute in double). Default: :meth:`predict` (and ``predict_forces``) on
        the structures of an :class:`~mdplugin.features.identity.Identity` featurizer."""
        self._check_fitted()
        self._check_asked(forces, stress)
        frames = list(features.frames)
        out = self.predict(frames, return_std=return_std)
        values, std = out if return_std else (out, None)
        f = np.concatenate([np.asarray(x, dtype=float) for x in self.predict_forces(frames)]) if forces else None
        return Prediction(self.target_, np.asarray(values, dtype=float),
                          None if std is None else np.asarray(std, dtype=float), forces=f)

    def _check_asked(self, forces: bool, stress: bool) -> None:
        """A :class:`ConfigError` when forces or stress are asked of a model that gives none."""
        if forces and (self.target_ != "energy" or not hasattr(self, "predict_forces")):
            raise ConfigError(f"a {self.target_!r} model ({self.kind!r}) gives no forces")
        if stress and not self.gives_stress:
            raise ConfigError(f"the {self.kind!r} {self.target_} model gives no stress")

    def _targets(self, targets) -> Targets:
        """``targets`` (:class:`Targets`, mapping or the model's own array) as :class:`Targets`,
        holding labels of the model's target (a :class:`DataError` otherwise)."""
        return Targets.coerce(targets, self.target_)

    def check_sampling(self) -> None:
        """Raise a one-line :class:`ConfigError` if this model cannot draw posterior samples
        (:meth:`sample_predictions`); models that can override it."""
        raise ConfigError(f"a {self.kind!r} {self.target_} model cannot draw posterior samples "
                          f"(models that can: lsoap, and rpr with its default GP)")

    def sample_predictions(self, frames: Sequence[Atoms], n_samples: int, seed=None, return_mean: bool = False):
        """Correlated posterior draws, (n_samples, n, ...) in the target's shape: each draw one
        plausible model evaluated on every frame (with ``return_mean`` also the mean prediction).
        Models that can draw them override this; the others raise a one-line :class:`ConfigError`."""
        self.check_sampling()
        raise NotImplementedError  # pragma: no cover - check_sampling raised

    # --- shared -------------------------------------------------------------------------------
    @property
    def target_(self) -> str:
        return getattr(self, "target", self.targets_supported[0] if self.targets_supported else "")

    def _check_target(self) -> None:
        target = getattr(self, "target", None)
        if target not in self.targets_supported:
            raise ConfigError(
                f"model {self.kind!r} cannot learn target {target!r} "
                f"(supported: {', '.join(self.targets_supported)})"
            )

    def _check_fitted(self) -> None:
        if not getattr(self, "is_fitted_", False):
            raise ConfigError(f"this {self.kind!r} model is not fitted yet: call fit() first")

    def export_state(self) -> dict:
        """What rebuilds this fitted model (:meth:`from_state`), as its model file holds it: ``kind``,
        ``params`` (hyper-parameters), ``arrays`` (learned state, name -> array), ``species``,
        ``training_fingerprint`` and ``n_train``."""
        return {
            "kind": self.kind,
            "params": self.get_params(deep=False),
            "arrays": {k: np.asarray(v) for k, v in self._get_state().items()},
            "species": [int(z) for z in getattr(self, "species_", [])],
            "training_fingerprint": getattr(self, "training_fingerprint_", None),
            "n_train": getattr(self, "n_train_", None),
        }

    @classmethod
    def from_state(cls, state: dict) -> "Model":
        """The fitted model described by ``state`` (see :meth:`export_state`; ``kind`` is not read)."""
        model = cls(**state.get("params", {}))
        model._set_state(state["arrays"])
        model.species_ = np.array(state.get("species", []), dtype=int).reshape(-1)
        model.training_fingerprint_ = state.get("training_fingerprint")
        model.n_train_ = state.get("n_train")
        model.is_fitted_ = True
        return model

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as ``.npz`` + JSON metadata, atomically."""
        self._check_fitted()
        state = self.export_state()
        arrays = state["arrays"]
        for name, a in arrays.items():
            if a.dtype == object:
                raise ModelFileError(f"model state {name!r} is an object array; cannot be saved safely")
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": state["kind"],
            "target": getattr(self, "target", None),
            "params": state["params"],
            "species": state["species"],
            "units": {self.target_: UNITS.get(self.target_, "")},
            "mdplugin_version": __version__,
            "training_fingerprint": state["training_fingerprint"],
            "n_train": state["n_train"],
            "checksum": _checksum(arrays),
        }
        try:
            meta["meta_checksum"] = _meta_checksum(meta)
            text = json.dumps(meta)
        except TypeError as exc:
            raise ModelFileError(f"hyper-parameters of {self.kind!r} are not JSON-serialisable: {exc}") from None
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **{_META_KEY: np.array(text)}, **arrays)


def read_metadata(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and arrays of a model file, validated; never unpickles."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file")
    if not zipfile.is_zipfile(path):  # np.load would take anything else for a pickle
        with open(path, "rb") as fh:
            head = fh.read(6)
        what = ("not a valid model file, truncated or corrupted (no zip directory)" if head[:2] == b"PK"
                else "a pickle; refused (model files hold plain arrays only)" if head[:1] == b"\x80"
                else "a single .npy array, not a model file (.npz)" if head == b"\x93NUMPY"
                else "empty" if not head else "not a model file (not an .npz archive)")
        raise ModelFileError(f"{path}: {what}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ModelFileError(f"{path}: contains pickled objects; refused (model files hold plain arrays only)") from None
        raise ModelFileError(f"{path}: not a valid model file ({exc})") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError, NotImplementedError, RuntimeError,
            MemoryError, OverflowError) as exc:  # zipfile/numpy raise all of these for damaged files
        raise ModelFileError(f"{path}: not a valid model file, truncated or corrupted ({type(exc).__name__})") from None
    if _META_KEY not in arrays:
        raise ModelFileError(f"{path}: not an mdplugin model file (no metadata)")
    try:
        meta = json.loads(str(arrays.pop(_META_KEY)))
    except (ValueError, TypeError):
        raise ModelFileError(f"{path}: model metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an mdplugin model file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this mdplugin supports ({FORMAT_VERSION}); upgrade mdplugin"
        )
    if _checksum(arrays) != meta.get("checksum"):
        raise ModelFileError(f"{path}: checksum mismatch: the file was altered or corrupted")
    if "meta_checksum" in meta and _meta_checksum(meta) != meta["meta_checksum"]:
        raise ModelFileError(f"{path}: metadata checksum mismatch: the file was altered or corrupted")
    if not isinstance(meta.get("kind"), str) or not isinstance(meta.get("params", {}), dict):
        raise ModelFileError(f"{path}: inconsistent model file (bad 'kind' or 'params' in the metadata)")
    return meta, arrays


def load_model(path: str | os.PathLike, kind: str | None = None, target: str | None = None) -> Model:
    """Load a model file; ``kind``/``target`` (optional) must match what the file holds."""
    meta, arrays = read_metadata(path)
    if kind is not None and meta["kind"] != kind:
        raise ModelFileError(f"{path}: is a {meta['kind']!r} model, expected {kind!r}")
    try:
        cls = get_model_class(meta["kind"])
    except ConfigError:
        raise ModelFileError(f"{path}: unknown model kind {meta['kind']!r}") from None
    if target is not None and meta.get("target") != target and target not in cls.derived_targets:
        raise ModelFileError(f"{path}: the model's target is {meta.get('target')!r}, expected {target!r}")
    try:
        return cls.from_state({**meta, "arrays": arrays})
    except (TypeError, KeyError, ValueError) as exc:
        raise ModelFileError(f"{path}: inconsistent model file ({type(exc).__name__}: {exc})") from None
