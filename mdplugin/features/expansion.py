"""Dense numpy spherical expansion of the neighbour density (featomic's numbers).

Every invariant and equivariant feature in mdplugin is built from ONE spherical expansion of a
batch of frames, as dense arrays with a FIXED species list, so that feature sizes never depend on
which elements a batch happens to contain.  Two engines compute it:

* ``"featomic"``: one call to featomic's ``SphericalExpansion``, whose sparse
  :class:`metatensor.TensorMap` is copied into the dense arrays.  Used for periodic cells.
* ``"tabulated"`` (:mod:`mdplugin.features.tabulated`): vectorised numpy for molecules
  (non-periodic frames).  Its radial functions are featomic's own splines, read back once per
  set of hyper-parameters, so it reproduces featomic's numbers (values to ~1e-15, gradients to
  ~3e-14 relative) with the same centres, pairs and layout: one DCE frame with gradients in
  0.6 ms instead of 5 ms (featomic's per-call overhead dominates there), 1000 frames 2–4× faster
  (``benchmarks/bench_expansion.py``).

``SphericalExpansion(engine="auto")`` (the default) uses the tabulated engine when every frame
of a batch is non-periodic and has at most 64 atoms (500 with gradients) — every batch of small
molecules, from one MD step to a training set — and featomic otherwise (periodic cells, large
clusters, where featomic's neighbour list and per-pair loop win).  ``engine="featomic"`` or
``"tabulated"`` forces one (periodic frames always go to featomic).

Conventions
-----------
* Centres are all atoms of all frames, in frame order then atom order: centre ``i`` is
  atom ``centre_atom[i]`` of frame ``centre_frame[i]``.
* Coefficients of angular order ``l`` have shape ``(n_centres, n_species, 2l+1,
  n_radial)``; the ``2l+1`` axis is featomic's real-spherical-harmonic order
  ``m = -l..l`` (for ``l = 1``: ``(y, z, x)``), ``n_radial = max_radial + 1`` (featomic
  counts radial functions from 0).
* Position gradients are stored per (centre, neighbour) pair, ``pairs[k] = (i, j)`` with
  global atom indices (the same numbering as the centres); ``gradients[l][k, x]`` is
  d c^l_i / d r_{j,x}, in Å⁻¹ times the coefficient units.  The self pair ``(i, i)`` is
  included whenever featomic reports it.

Periodic cells work as featomic handles them; a frame with an all-zero cell is a molecule
(``pbc`` is forced to ``False`` for the featomic call, the caller's ``Atoms`` are left
untouched).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.errors import ConfigError, DataError
from .raw_blocks import BlockReader

__all__ = ["DenseGradients", "Expansion", "SphericalExpansion", "frame_element_check"]


@dataclass
class Expansion:
    """Dense spherical-expansion coefficients for a batch of frames.

    Storage is featomic's native layout, one array per ``l``:
    ``values[l]`` ``(n_centres, 2l+1, n_species * n_radial)`` (species outer, radial
    inner); :attr:`coefficients` gives ``(n_centres, n_species, 2l+1, n_radial)`` views.

    Attributes
    ----------
    species : tuple[int, ...]
        Neighbour-species order (atomic numbers, sorted).
    max_angular : int
    values : list[np.ndarray]
        Per ``l``: ``(n_centres, 2l+1, n_species * n_radial)``, C-contiguous.
    centre_frame, centre_atom, centre_species : np.ndarray
        ``(n_centres,)`` int: frame index, atom index within the frame, atomic number.
    n_frames : int
    pairs : np.ndarray | None
        ``(n_pairs, 2)`` int, (centre i, neighbour j) global atom indices, sorted, when
        gradients were computed.
    gradient_values : Sequence[np.ndarray] | None
        Per ``l``: ``(n_pairs, 3, 2l+1, n_species * n_radial)``: d values[l][i] / d r_j. From
        featomic a :class:`DenseGradients` list; from the tabulated engine a
        :class:`~mdplugin.features.tabulated.PairGradients` sequence, which builds these
        arrays on first indexing. Both contract with ∂E/∂c through ``forces(∂E/∂c)``, the
        tabulated one without building the arrays.
    """

    species: tuple
    max_angular: int
    values: list
    centre_frame: np.ndarray
    centre_atom: np.ndarray
    centre_species: np.ndarray
    n_frames: int
    pairs: np.ndarray | None = None
    gradient_values: list | None = None

    @property
    def n_centres(self) -> int:
        return int(self.centre_frame.shape[0])

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def n_radial(self) -> int:
        return int(self.values[0].shape[-1]) // len(self.species)

    @property
    def coefficients(self) -> list:
        """Per ``l``: ``(n_centres, n_species, 2l+1, n_radial)`` views of :attr:`values`."""
        s, r = self.n_species, self.n_radial
        return [
            v.reshape(v.shape[0], v.shape[1], s, r).transpose(0, 2, 1, 3) for v in self.values
        ]

    def centre_rows(self) -> dict[int, slice | np.ndarray]:
        """``{atomic number: rows}`` of the centres of each species present, in order of atomic
        number; ``rows`` is a slice when those centres are contiguous (indexing then makes no
        copy), else an int array. Computed once per expansion (the models of one MD step share it);
        never modify the returned arrays."""
        rows = self.__dict__.get("_centre_rows")
        if rows is None:
            rows = _species_rows(self.centre_species)
            self.__dict__["_centre_rows"] = rows
        return rows

    @property
    def gradients(self) -> list | None:
        """Per ``l``: ``(n_pairs, 3, n_species, 2l+1, n_radial)`` views, or ``None``."""
        if self.gradient_values is None:
            return None
        s, r = self.n_species, self.n_radial
        return [
            g.reshape(g.shape[0], 3, g.shape[2], s, r).transpose(0, 1, 3, 2, 4)
            for g in self.gradient_values
        ]


class DenseGradients(list):
    """Position gradients as dense per-``l`` arrays (featomic's engine): a list of
    ``(n_pairs, 3, 2l+1, n_species·n_radial)`` arrays, d values[l][i] / d r_j for every
    (centre i, neighbour j) pair of ``pairs`` (n_pairs, 2), with the same :meth:`forces`
    contraction as the tabulated engine's
    :class:`~mdplugin.features.tabulated.PairGradients`."""

    def __init__(self, arrays: Sequence[np.ndarray], pairs: np.ndarray):
        super().__init__(arrays)
        self.pairs = pairs

    def forces(self, energy_gradient: Sequence[np.ndarray]) -> np.ndarray:
        """``−Σ_i (∂E/∂c_i)·(∂c_i/∂r_j)`` (n_centres, 3), from ``energy_gradient[l]`` = ∂E/∂c^l
        ``(n_centres, 2l+1, n_species·n_radial)``."""
        n = len(energy_gradient[0])
        centre, neighbour = self.pairs[:, 0], self.pairs[:, 1]
        per_pair = np.zeros((len(self.pairs), 3))
        for grad, de_dc in zip(self, energy_gradient):
            per_pair += np.einsum("kam,km->ka", grad.reshape(len(self.pairs), 3, -1), de_dc.reshape(n, -1)[centre])
        return -np.stack([np.bincount(neighbour, weights=per_pair[:, a], minlength=n) for a in range(3)], axis=1)


def _clean_frames(frames: Sequence) -> list:
    """Return featomic-ready systems: all-zero cells become non-periodic molecules."""
    from ase import Atoms

    out = []
    for k, atoms in enumerate(frames):
        cell = atoms.cell.array if hasattr(atoms.cell, "array") else np.asarray(atoms.cell)
        pbc = np.asarray(atoms.pbc, dtype=bool).reshape(-1)
        if pbc.size == 1:
            pbc = np.repeat(pbc, 3)
        zero_cell = bool(abs(cell).max() < 1e-9)
        if zero_cell or not pbc.any():
            if pbc.any() or not zero_cell:
                atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions)
            out.append(atoms)
        elif pbc.all():
            out.append(atoms)
        else:
            raise DataError(
                f"frame {k}: mixed periodic boundary conditions {pbc.tolist()} are not "
                "supported (use all periodic or none)"
            )
    return out


@functools.lru_cache(maxsize=64)
def _known_elements(species: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``species`` and a boolean lookup table over atomic numbers (built once per species set)."""
    known = np.asarray(sorted(species), dtype=np.int64)
    lookup = np.zeros(max(256, int(known.max(initial=0)) + 1), dtype=bool)
    lookup[known] = True
    return known, lookup


def frame_element_check(frames: Sequence, species: Sequence[int], numbers: np.ndarray | None = None) -> None:
    """Raise :class:`DataError` naming the first element of ``frames`` not in ``species``
    (``numbers``: the atomic numbers of all frames concatenated, when the caller has them)."""
    known, lookup = _known_elements(tuple(int(z) for z in species))
    if numbers is None:
        numbers = np.concatenate([np.asarray(atoms.numbers) for atoms in frames]) if len(frames) else np.zeros(0, int)
    if numbers.size == 0 or (numbers.min() >= 0 and numbers.max() < len(lookup) and lookup[numbers].all()):
        return  # every element known: one vectorised check (the per-frame loop below names the culprit)
    from ase.data import chemical_symbols

    for k, atoms in enumerate(frames):
        numbers = np.asarray(atoms.numbers)
        bad = numbers[~np.isin(numbers, known)]
        if bad.size:
            z = int(bad[0])
            names = ", ".join(chemical_symbols[int(s)] for s in known)
            raise DataError(
                f"frame {k}: element {chemical_symbols[z]} (Z={z}) is not in the "
                f"model's species ({names})"
            )


class SphericalExpansion:
    """featomic's ``SphericalExpansion`` as dense numpy arrays (featomic or the tabulated engine).

    Parameters
    ----------
    species : sequence of int
        Atomic numbers that may appear (as centres or neighbours); any other element is
        a :class:`DataError` naming it.
    cutoff : float
        Cutoff radius, Å.
    max_radial : int
        featomic ``max_radial`` (GTO basis, counted from 0: ``max_radial + 1`` functions).
    max_angular : int
        Highest spherical-harmonic order.
    gaussian_width : float
        Width of the atomic Gaussians, Å.
    smoothing_width : float
        Width of the shifted-cosine cutoff smoothing, Å.
    engine : {"auto", "featomic", "tabulated"}
        Which code computes the expansion (same numbers, see the module doc): "tabulated" the
        numpy engine for batches of molecules (featomic for batches with a periodic frame);
        "featomic" always featomic; "auto" (default) the tabulated engine for batches of molecules
        of at most :attr:`AUTO_MAX_ATOMS` atoms each (64 without, 500 with gradients), featomic
        otherwise.
    """

    ENGINES = ("auto", "featomic", "tabulated")

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 4.5,
        max_radial: int = 6,
        max_angular: int = 4,
        gaussian_width: float = 0.3,
        smoothing_width: float = 0.5,
        engine: str = "auto",
    ):
        self.species = tuple(sorted(int(s) for s in species))
        self.cutoff = float(cutoff)
        self.max_radial = int(max_radial)
        self.max_angular = int(max_angular)
        self.gaussian_width = float(gaussian_width)
        self.smoothing_width = float(smoothing_width)
        self.engine = engine
        self._calculator = None
        self._tabulated = None
        self._checked = None
        self._plans: dict = {}

    def _key(self) -> tuple:
        return (self.species, self.cutoff, self.max_radial, self.max_angular, self.gaussian_width,
                self.smoothing_width, self.engine)

    def __eq__(self, other: object) -> bool:
        """Equal species, hyper-parameters and engine: the same expansion (the ASE calculator
        computes one per structure for all the models whose featurizers are equal)."""
        return isinstance(other, SphericalExpansion) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"SphericalExpansion(species={list(self.species)}, cutoff={self.cutoff}, max_radial={self.max_radial}, "
                f"max_angular={self.max_angular}, gaussian_width={self.gaussian_width}, "
                f"smoothing_width={self.smoothing_width}, engine={self.engine!r})")

    def hypers(self) -> dict:
        """featomic hyper-parameters of the underlying calculator."""
        return {
            "cutoff": {
                "radius": self.cutoff,
                "smoothing": {"type": "ShiftedCosine", "width": self.smoothing_width},
            },
            "density": {"type": "Gaussian", "width": self.gaussian_width},
            "basis": {
                "type": "TensorProduct",
                "max_angular": self.max_angular,
                "radial": {"type": "Gto", "max_radial": self.max_radial},
            },
        }

    @property
    def calculator(self):
        """The featomic calculator (built lazily)."""
        if self._calculator is None:
            import featomic

            self._calculator = featomic.SphericalExpansion(**self.hypers())
        return self._calculator

    _MAX_PLANS = 32

    def _remember(self, signature: tuple, plan: tuple) -> None:
        """Keep a scatter plan (bounded cache: MD steps of one system reuse a handful of plans)."""
        if len(self._plans) >= self._MAX_PLANS:
            self._plans.clear()
        self._plans[signature] = plan

    def _block_layout(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per block: its l, and the index of its neighbour species in :attr:`species`."""
        species_index = np.zeros(max(max(self.species), int(keys[:, 3].max(initial=0))) + 1, dtype=np.int64)
        species_index[list(self.species)] = np.arange(len(self.species))
        return keys[:, 0].astype(np.int64), species_index[keys[:, 3]]

    def _values_plan(self, reader: BlockReader, keys, shapes, offsets, centre_species) -> tuple:
        """Where every number of the blocks' flat values goes in the dense ``values`` buffer
        (all l one after the other), each block's centre rows, the sample labels that had to be
        read, and for the gradients each block's species pair and whether it is the first block of
        that pair.

        featomic's samples are sorted by (system, atom): a block with as many samples as the batch
        has centres of its species holds exactly those centres, in order, so its labels need not be
        read; otherwise they are."""
        n_centres = len(centre_species)
        n_species, n_radial = len(self.species), self.max_radial + 1
        block_l, block_s = self._block_layout(keys)
        centres_of = {int(z): np.flatnonzero(centre_species == z) for z in np.unique(centre_species)}
        start_l = np.cumsum([0] + [n_centres * (2 * l + 1) * n_species * n_radial for l in range(self.max_angular + 1)])
        rows, dest, read = [], [], []
        for index, key in enumerate(keys):
            expected = centres_of.get(int(key[2]))
            if expected is None or len(expected) != shapes[index][0]:
                samples = reader.samples(index)
                read.append((index, samples))
                expected = offsets[samples[:, 0]] + samples[:, 1]
            rows.append(expected)
            l, m = int(block_l[index]), 2 * int(block_l[index]) + 1
            where = ((expected[:, None, None] * m + np.arange(m)[None, :, None]) * n_species + block_s[index]) \
                * n_radial + np.arange(n_radial)[None, None, :]
            dest.append(start_l[l] + where.ravel())
        # the (centre, neighbour) pairs of a (centre species, neighbour species) are the same for
        # every l: gradient samples are read for the first l of each pair of species only
        pair_type = keys[:, 2].astype(np.int64) * 1024 + keys[:, 3]
        first = np.zeros(len(keys), dtype=bool)
        first[np.unique(pair_type, return_index=True)[1]] = True
        return (np.concatenate(dest) if dest else np.zeros(0, dtype=np.int64)), rows, read, first, pair_type

    def _gradient_plan(self, reader: BlockReader, keys, first, pair_type, gshapes, gsamples, rows,
                       offsets, n_centres) -> tuple:
        """Where every number of the gradient blocks' flat values goes in the dense gradient buffer,
        and the (centre, neighbour) pairs ``(n_pairs, 2)``."""
        n_species, n_radial = len(self.species), self.max_radial + 1
        block_l, block_s = self._block_layout(keys)
        codes, codes_of_type, read = [None] * len(keys), {}, []
        for index in np.r_[np.flatnonzero(first), np.flatnonzero(~first)]:
            code = codes_of_type.get(pair_type[index])
            if code is None or len(code) != gshapes[index][0]:
                gs = gsamples[index]
                if gs is None:
                    gs = reader.gradient(int(index), "positions")[0]
                    read.append((int(index), gs))
                # gradient samples: (sample, system, atom)
                code = rows[index][gs[:, 0]] * n_centres + offsets[gs[:, 1]] + gs[:, 2]
                codes_of_type.setdefault(pair_type[index], code)
            codes[index] = code
        pair_codes = np.unique(np.concatenate(codes)) if codes else np.zeros(0, dtype=np.int64)
        pairs = np.stack([pair_codes // n_centres, pair_codes % n_centres], axis=1)
        n_pairs = len(pair_codes)
        start_l = np.cumsum([0] + [n_pairs * 3 * (2 * l + 1) * n_species * n_radial for l in range(self.max_angular + 1)])
        dest = []
        for index in range(len(keys)):
            l, m = int(block_l[index]), 2 * int(block_l[index]) + 1
            at = np.searchsorted(pair_codes, codes[index])
            where = (((at[:, None, None, None] * 3 + np.arange(3)[None, :, None, None]) * m
                      + np.arange(m)[None, None, :, None]) * n_species + block_s[index]) * n_radial \
                + np.arange(n_radial)[None, None, None, :]
            dest.append(start_l[l] + where.ravel())
        return (np.concatenate(dest) if dest else np.zeros(0, dtype=np.int64)), pairs, read

    #: "auto" uses the tabulated engine when no frame of a batch has more atoms than this, without
    #: and with gradients (benchmarks/bench_expansion.py: 1 to 1000 DCE frames are all 2-10x
    #: faster; for one dense water cluster featomic wins beyond ~60 atoms without gradients and
    #: ~600 with)
    AUTO_MAX_ATOMS = (64, 500)

    def _engine_for(self, largest: int, gradients: bool) -> str:
        """The engine for a batch of molecules whose largest frame has ``largest`` atoms (batches
        with a periodic frame always go to featomic)."""
        if self.engine == "auto":
            return "tabulated" if largest <= self.AUTO_MAX_ATOMS[bool(gradients)] else "featomic"
        return self.engine

    def _compute_tabulated(self, systems, offsets, centre_frame, centre_atom, centre_species,
                           gradients: bool) -> Expansion | None:
        """The expansion from the tabulated engine, or ``None`` when its radial table could not
        reproduce featomic's spline for these hypers (then featomic computes it)."""
        if self._tabulated is None:
            from .tabulated import TabulatedExpansion

            self._tabulated = TabulatedExpansion(self.hypers(), self.species)
        if not self._tabulated.exact:
            return None
        values, pairs, grads = self._tabulated.compute(systems, offsets, centre_species, gradients)
        return self._result(values, centre_frame, centre_atom, centre_species, len(systems), pairs, grads)

    def _result(self, values, centre_frame, centre_atom, centre_species, n_frames: int, pairs, grads
                ) -> Expansion:
        """The :class:`Expansion` of either engine (``pairs``, ``grads`` None without gradients)."""
        return Expansion(
            species=self.species,
            max_angular=self.max_angular,
            values=values,
            centre_frame=centre_frame,
            centre_atom=centre_atom,
            centre_species=centre_species,
            n_frames=n_frames,
            pairs=pairs,
            gradient_values=grads,
        )

    def compute(self, frames: Sequence, gradients: bool = False) -> Expansion:
        """Expand the neighbour density of every atom of ``frames`` (list of ``ase.Atoms``).

        ``gradients=True`` adds position gradients per (centre, neighbour) pair.
        """
        if not isinstance(frames, (list, tuple)):
            frames = [frames]
        if len(frames) == 0:
            raise DataError("no frames to compute features for")
        if self.engine not in self.ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(self.ENGINES)}, not {self.engine!r}")
        if len(frames) == 1:
            centre_species = np.array(frames[0].numbers, dtype=np.int64)
        else:
            centre_species = np.concatenate([np.asarray(a.numbers) for a in frames]).astype(np.int64)
        if len(frames) != 1 or centre_species.tobytes() != self._checked:
            frame_element_check(frames, self.species, centre_species)
            if len(frames) == 1:
                self._checked = centre_species.tobytes()  # an MD step checks its molecule once
        if len(frames) == 1:  # an MD step: skip the batch bookkeeping
            n_centres = len(centre_species)
            offsets = np.array([0, n_centres], dtype=np.int64)
            sizes = offsets[1:]
            centre_frame = np.zeros(n_centres, dtype=np.int64)
            centre_atom = np.arange(n_centres)
        else:
            sizes = np.fromiter((len(a) for a in frames), dtype=np.int64, count=len(frames))
            offsets = np.zeros(len(frames) + 1, dtype=np.int64)
            np.cumsum(sizes, out=offsets[1:])
            n_centres = int(offsets[-1])
            centre_frame = np.repeat(np.arange(len(frames)), sizes)
            centre_atom = np.arange(n_centres) - offsets[centre_frame]

        # molecules (no periodic direction) need no cleaning for the tabulated engine
        largest = n_centres if len(frames) == 1 else int(sizes.max())
        tabulated = self._engine_for(largest, gradients) == "tabulated"
        molecules = tabulated and not any(atoms.pbc.any() for atoms in frames)
        systems = frames if molecules else _clean_frames(frames)
        if molecules or (tabulated and not any(atoms.pbc.any() for atoms in systems)):
            expansion = self._compute_tabulated(systems, offsets, centre_frame, centre_atom, centre_species,
                                                gradients)
            if expansion is not None:
                return expansion
            systems = _clean_frames(frames)

        tensor = self.calculator.compute(
            systems, gradients=["positions"] if gradients else None
        )
        reader = BlockReader(tensor)
        keys = reader.keys()  # (o3_lambda, o3_sigma, center_type, neighbor_type)
        width = len(self.species) * (self.max_radial + 1)
        sizes_l = [n_centres * (2 * l + 1) * width for l in range(self.max_angular + 1)]
        flat, shapes, _ = reader.flat(len(keys), capacity=sum(sizes_l))
        signature = (keys.tobytes(), tuple(shape[0] for shape in shapes), sizes.tobytes(),
                     centre_species.tobytes())
        plan = self._plans.get(signature)
        if plan is None or not _labels_unchanged(reader, plan[2]):
            plan = self._values_plan(reader, keys, shapes, offsets, centre_species)
            self._remember(signature, plan)
        dest, rows, _, first, pair_type = plan
        dense = np.zeros(sum(sizes_l))
        dense[dest] = flat
        values = _split(dense, sizes_l, [(n_centres, 2 * l + 1, width) for l in range(self.max_angular + 1)])

        pairs = grads = None
        if gradients:
            gflat, gshapes, gsamples = reader.flat(len(keys), "positions", with_samples=first,
                                                   capacity=3 * sum(sizes_l) * max(1, n_centres // len(sizes)))
            gsignature = signature + (tuple(shape[0] for shape in gshapes),
                                      b"".join(x.tobytes() for x in gsamples if x is not None))
            gplan = self._plans.get(gsignature)
            if gplan is None or not _labels_unchanged(reader, gplan[2], "positions"):
                gplan = self._gradient_plan(reader, keys, first, pair_type, gshapes, gsamples, rows,
                                            offsets, n_centres)
                self._remember(gsignature, gplan)
            gdest, pairs, _ = gplan
            n_pairs = len(pairs)
            gsizes = [n_pairs * 3 * (2 * l + 1) * width for l in range(self.max_angular + 1)]
            dense = np.zeros(sum(gsizes))
            dense[gdest] = gflat
            grads = DenseGradients(_split(dense, gsizes, [(n_pairs, 3, 2 * l + 1, width)
                                                  for l in range(self.max_angular + 1)]), pairs)

        return self._result(values, centre_frame, centre_atom, centre_species, len(frames), pairs, grads)


def _labels_unchanged(reader: BlockReader, read: list, gradient: str | None = None) -> bool:
    """Whether the sample labels a plan had to read (``[(block index, labels)]``) are still the same:
    those blocks' rows depend on which atoms have neighbours of a species, not only on counts."""
    for index, labels in read:
        now = reader.samples(index) if gradient is None else reader.gradient(index, gradient)[0]
        if not np.array_equal(now, labels):
            return False
    return True


def _split(buffer: np.ndarray, sizes: Sequence[int], shapes: Sequence[tuple]) -> list[np.ndarray]:
    """Consecutive pieces of ``buffer`` of the given sizes, as views with the given shapes."""
    out, start = [], 0
    for size, shape in zip(sizes, shapes):
        out.append(buffer[start : start + size].reshape(shape))
        start += size
    return out


_SPECIES_ROWS: dict[bytes, dict] = {}


def _species_rows(species: np.ndarray) -> dict[int, slice | np.ndarray]:
    """:meth:`Expansion.centre_rows` of a species array, kept per species sequence when it is short
    (every step of an MD run has the same one; at most 64 kept); the int arrays are read-only."""
    species = np.ascontiguousarray(species)
    key = species.dtype.str.encode() + species.tobytes() if len(species) <= 4096 else None
    rows = _SPECIES_ROWS.get(key) if key is not None else None
    if rows is None:
        rows = {}
        for z in np.unique(species):
            index = np.flatnonzero(species == z)
            if index[-1] - index[0] + 1 == len(index):
                index = slice(int(index[0]), int(index[-1]) + 1)
            else:
                index.setflags(write=False)
            rows[int(z)] = index
        if key is not None:
            if len(_SPECIES_ROWS) >= 64:
                _SPECIES_ROWS.clear()
            _SPECIES_ROWS[key] = rows
    return rows
