"""The spherical expansion of the neighbour density, for molecules and periodic cells alike.

Every invariant and equivariant feature in mdplugin is built from ONE spherical expansion of a
batch of structures, as dense arrays with a FIXED species list (feature sizes never depend on which
elements a batch happens to contain). One engine computes it:

* neighbour pairs from vesin's cell lists (:mod:`mdplugin.structures.neighbours`; images of a
  periodic cell included, also an atom's own images in a cell smaller than twice the cutoff; mixed
  periodicity such as a slab works too); one structure at a time (an MD step) through a Verlet list
  with a skin, searched again only when an atom has moved by half the skin. A half list: every
  pair once, its harmonics, their gradients and its radial values serving both ends
  (``Y_lm(−d) = (−1)^l Y_lm(d)``, :mod:`.kernels`);
* the real spherical harmonics of the pair vectors and their gradients from sphericart;
* the radial functions from featomic's own spline of the radial integral (:mod:`.radial`);
* the sums over pairs, and the contraction of ∂E/∂c with the pair derivatives into forces and
  the strain derivative (stress), in compiled per-pair loops (:mod:`.kernels`).

featomic's ``SphericalExpansion`` given the same spline (:meth:`SphericalExpansion.featomic_reference`)
computes the same numbers (values, ``positions`` and ``strain`` gradients to ~1e-14 relative; the
tests ask 1e-10); with its native ``Gto`` hypers, which older model files name, it agrees to ~1e-9
(values) and ~1e-8 (gradients).

Conventions
-----------
* Centres are all atoms of all frames, in frame order then atom order: centre ``i`` is atom
  ``centre_atom[i]`` of frame ``centre_frame[i]``.
* Coefficients of angular order ``l`` have shape ``(n_centres, 2l+1, n_species·n_radial)``
  (species outer, radial inner); the ``2l+1`` axis is the real-spherical-harmonic order
  ``m = -l..l`` (for ``l = 1``: ``(y, z, x)``), ``n_radial = max_radial + 1``.
* Position gradients, as featomic reports them (:class:`PairGradients`, built when indexed):
  rows ``pairs[k] = (i, j)`` (global atom indices, sorted, each centre's own row ``(i, i)``
  included), ``gradients[l][k, x]`` = d c^l_i / d r_{j,x} (summed over the images of ``j``), Å⁻¹
  times the coefficient units. An MD step never builds them: :meth:`PairGradients.forces_and_strain`
  contracts ∂E/∂c with the pair derivatives directly.

A frame with no periodic direction, or an all-zero cell, is a molecule.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import DataError
from ..structures.neighbours import VerletPairs, batch_pairs
from .buffers import BufferPool
from .radial import RadialSpline, radial_spline

__all__ = ["Expansion", "PairGradients", "SphericalExpansion", "frame_element_check", "frame_volumes"]


@dataclass
class Expansion:
    """Dense spherical-expansion coefficients for a batch of frames.

    Attributes
    ----------
    species : tuple[int, ...]
        Neighbour-species order (atomic numbers, sorted).
    max_angular : int
    values : list[np.ndarray]
        Per ``l``: ``(n_centres, 2l+1, n_species * n_radial)`` views of one buffer.
    centre_frame, centre_atom, centre_species : np.ndarray
        ``(n_centres,)`` int: frame index, atom index within the frame, atomic number.
    n_frames : int
    pair_gradients : PairGradients | None
        The position (and strain) derivatives, when computed with gradients.
    volumes : np.ndarray | None
        ``(n_frames,)`` cell volumes, Å³, for frames periodic in all three directions (``nan``
        for the others); set with gradients.
    """

    species: tuple
    max_angular: int
    values: list
    centre_frame: np.ndarray
    centre_atom: np.ndarray
    centre_species: np.ndarray
    n_frames: int
    pair_gradients: "PairGradients | None" = None
    volumes: np.ndarray | None = None

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
        return [v.reshape(v.shape[0], v.shape[1], s, r).transpose(0, 2, 1, 3) for v in self.values]

    @property
    def pairs(self) -> np.ndarray | None:
        """``(n_rows, 2)`` (centre, atom) rows of the dense position gradients, or None."""
        return None if self.pair_gradients is None else self.pair_gradients.pairs

    @property
    def gradient_values(self) -> "PairGradients | None":
        """The dense position gradients, per ``l`` ``(n_rows, 3, 2l+1, n_species·n_radial)``
        (:class:`PairGradients` as a sequence; built on first indexing), or None."""
        return self.pair_gradients


class PairGradients(Sequence):
    """The derivatives of an expansion with respect to the positions (and the cell), kept as the
    neighbour pairs they come from.

    * :meth:`forces_and_strain` contracts ``∂E/∂c`` with them (an MD step: forces and stress,
      no gradient array is formed);
    * as a sequence, item ``l`` is the dense position gradient ``(n_rows, 3, 2l+1,
      n_species·n_radial)`` with rows :attr:`pairs`, featomic's ``positions`` gradients (built on
      first indexing: training with forces, tests);
    * :meth:`strain` gives featomic's ``strain`` gradients densely.
    """

    def __init__(self, engine: "SphericalExpansion", n_centres: int, n_frames: int, centre, neighbour, centre_slot,
                 slot, frame, vectors, distances, y, dy, radial, dradial):
        self._engine, self.n_centres, self.n_frames = engine, n_centres, n_frames
        self.centre, self.neighbour, self.centre_slot, self.slot = centre, neighbour, centre_slot, slot
        self.frame = frame
        self.vectors, self.distances, self._y, self._dy = vectors, distances, y, dy
        self._radial, self._dradial = radial, dradial  # (n_pairs, L+1, n_radial) G_nl(r), dG_nl/dr
        self._dense: list | None = None
        self._rows: tuple | None = None

    def __len__(self) -> int:
        return self._engine.max_angular + 1

    def __getitem__(self, l):
        return self._dense_arrays()[l]

    def _row_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(pairs (n_rows, 2), row (n_pairs,), row_back (n_pairs,), self_row (n_centres,))``: the
        unique (centre, neighbour) rows of both ends of every pair with every centre's own row,
        sorted, and where each pair (``(i, j)``, ``(j, i)``) and centre goes."""
        if self._rows is None:
            n = self.n_centres
            own = np.arange(n, dtype=np.int64) * (n + 1)
            forward, backward = self.centre * n + self.neighbour, self.neighbour * n + self.centre
            keys = np.unique(np.concatenate([forward, backward, own]))
            self._rows = (np.stack([keys // n, keys % n], axis=1), np.searchsorted(keys, forward),
                          np.searchsorted(keys, backward), np.searchsorted(keys, own))
        return self._rows

    @property
    def pairs(self) -> np.ndarray:
        """``(n_rows, 2)`` int: (centre i, atom j) of every dense gradient row, sorted."""
        return self._row_index()[0]

    def _dense_arrays(self, with_strain: bool = False) -> list:
        if self._dense is None or (with_strain and len(self._dense) == len(self)):
            e = self._engine
            pairs, row, row_back, self_row = self._row_index()
            n_l, sr = e.max_angular + 1, len(e.species) * (e.max_radial + 1)
            sizes = [len(pairs) * 3 * (2 * l + 1) * sr for l in range(n_l)]
            strain_sizes = [self.n_centres * 9 * (2 * l + 1) * sr for l in range(n_l)] if with_strain else [0] * n_l
            offsets = np.concatenate([np.cumsum([0] + sizes[:-1]), np.cumsum([0] + strain_sizes[:-1])]).astype(np.int64)
            out, strain = np.zeros(sum(sizes)), np.zeros(max(sum(strain_sizes), 1))
            from .kernels import dense_pair_gradients

            spline = e.spline
            dense_pair_gradients(self.centre, self.neighbour, self.centre_slot, self.slot, self.vectors,
                                 self.distances, self._y, self._dy, *e.radial_cubics, spline.cutoff,
                                 spline.smoothing_width, len(e.species), row, row_back, self_row[self.centre],
                                 self_row[self.neighbour], offsets, out, strain, with_strain)
            dense = _split(out, sizes, [(len(pairs), 3, 2 * l + 1, sr) for l in range(n_l)])
            if with_strain:
                dense += _split(strain, strain_sizes, [(self.n_centres, 3, 3, 2 * l + 1, sr) for l in range(n_l)])
            self._dense = dense
        return self._dense

    def strain(self) -> list:
        """featomic's ``strain`` gradients: per ``l`` ``(n_centres, 3, 3, 2l+1, n_species·n_radial)``,
        ``[i, b, a]`` = ``Σ_p ∂c_i/∂d_p,a d_p,b`` (components ``xyz_2``, ``xyz_1``)."""
        return self._dense_arrays(with_strain=True)[len(self):]

    def forces_and_strain(self, energy_gradient: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forces ``−∂E/∂r`` (n_centres, 3) and the strain derivative ``∂E/∂ε`` (n_frames, 3, 3)
        from ``energy_gradient[l]`` = ∂E/∂c^l ``(n_centres, 2l+1, n_species·n_radial)`` (or all of
        them as one flat float64 array in that layout, one l after the other), in one pass
        over the pairs (:func:`~mdplugin.features.kernels.contract_pairs`). ``∂E/∂ε_ab`` is the
        derivative under the strain ``r → (1 + ε) r`` of positions and cell (stress = ∂E/∂ε / V);
        for a molecule it is the (meaningless but harmless) same sum."""
        from .kernels import contract_pairs

        e, spline = self._engine, self._engine.spline
        if isinstance(energy_gradient, np.ndarray) and energy_gradient.ndim == 1:
            de_dc = np.ascontiguousarray(energy_gradient, dtype=np.float64)
        else:
            de_dc = np.concatenate([np.ascontiguousarray(g, dtype=np.float64).reshape(-1) for g in energy_gradient])
        if de_dc.size != self.n_centres * len(e.species) * (e.max_radial + 1) * (e.max_angular + 1) ** 2:
            raise ValueError(f"energy gradient of {de_dc.size} values for an expansion of {self.n_centres} centres")
        forces = np.zeros((self.n_centres, 3))
        strain = np.zeros((self.n_frames, 3, 3))
        contract_pairs(self.centre, self.neighbour, self.centre_slot, self.slot, self.frame, self.vectors,
                       self.distances, self._y, self._dy, self._radial, self._dradial, spline.cutoff,
                       len(e.species), e.offsets(self.n_centres), de_dc, forces, strain)
        return forces, strain

    def forces(self, energy_gradient: Sequence[np.ndarray]) -> np.ndarray:
        """``−Σ_i (∂E/∂c_i)·(∂c_i/∂r_j)`` (n_centres, 3) (:meth:`forces_and_strain`)."""
        return self.forces_and_strain(energy_gradient)[0]


def _split(buffer: np.ndarray, sizes: Sequence[int], shapes: Sequence[tuple]) -> list[np.ndarray]:
    """Consecutive pieces of ``buffer`` of the given sizes, as views with the given shapes."""
    out, start = [], 0
    for size, shape in zip(sizes, shapes):
        out.append(buffer[start : start + size].reshape(shape))
        start += size
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


def frame_volumes(frames: Sequence) -> np.ndarray:
    """``(n_frames,)`` cell volumes, Å³, of the frames periodic in all three directions; ``nan`` for
    molecules and partly periodic frames (no stress there)."""
    out = np.full(len(frames), np.nan)
    for k, atoms in enumerate(frames):
        pbc = np.asarray(atoms.pbc, dtype=bool).reshape(-1)
        if pbc.all():
            out[k] = abs(float(np.linalg.det(atoms.cell.array)))
    return out


class SphericalExpansion:
    """The spherical expansion of molecules and cells as dense numpy arrays (see the module doc).

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
    """

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        max_radial: int = 4,
        max_angular: int = 3,
        gaussian_width: float = 0.3,
        smoothing_width: float = 0.5,
    ):
        self.species = tuple(sorted(int(s) for s in species))
        self.cutoff = float(cutoff)
        self.max_radial = int(max_radial)
        self.max_angular = int(max_angular)
        self.gaussian_width = float(gaussian_width)
        self.smoothing_width = float(smoothing_width)
        self._spline: RadialSpline | None = None
        self._cubics: tuple | None = None
        self._rows: tuple | None = None
        self._harmonics = None
        self._buffers = BufferPool()  # the per-pair arrays of an MD step, reused between steps
        self._checked: bytes | None = None
        self._offsets: dict[int, np.ndarray] = {}
        self._verlet = VerletPairs(self.cutoff, full_list=False)
        lookup = np.full(max(self.species, default=0) + 1, -1, dtype=np.int64)
        lookup[list(self.species)] = np.arange(len(self.species))
        self._slot_of = lookup

    def _key(self) -> tuple:
        return (self.species, self.cutoff, self.max_radial, self.max_angular, self.gaussian_width,
                self.smoothing_width)

    def __eq__(self, other: object) -> bool:
        """Equal species and hyper-parameters: the same expansion (the ASE calculator computes one
        per structure for all the models whose featurizers are equal)."""
        return isinstance(other, SphericalExpansion) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"SphericalExpansion(species={list(self.species)}, cutoff={self.cutoff}, max_radial={self.max_radial}, "
                f"max_angular={self.max_angular}, gaussian_width={self.gaussian_width}, "
                f"smoothing_width={self.smoothing_width})")

    def hypers(self) -> dict:
        """featomic hyper-parameters of the native ``Gto`` expansion this engine reproduces
        (the form older model files name)."""
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
    def spline(self) -> RadialSpline:
        """featomic's spline of the radial functions (:func:`~.radial.radial_spline`, built once)."""
        if self._spline is None:
            self._spline = radial_spline(self.cutoff, self.max_radial, self.max_angular, self.gaussian_width,
                                         self.smoothing_width)
        return self._spline

    @property
    def radial_cubics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The spline's cubics, inverse steps and interval counts (:meth:`~.radial.RadialSpline.coefficients`)."""
        if self._cubics is None:
            self._cubics = self.spline.coefficients()
        return self._cubics

    @property
    def radial_rows(self) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
        """The cubics as the pair kernels read them (:func:`~.kernels.radial_rows`): ``(rows, uniform,
        inverse_steps, n_intervals)``."""
        if self._rows is None:
            from .kernels import radial_rows

            cubics, inv_step, n_int = self.radial_cubics
            self._rows = (*radial_rows(cubics, inv_step, n_int), inv_step, n_int)
        return self._rows

    def featomic_reference(self):
        """featomic's ``SphericalExpansion`` computing exactly this engine's numbers (same spline):
        the reference of the tests and benchmarks."""
        import featomic

        return featomic.SphericalExpansion(**self.spline.featomic_hypers())

    def offsets(self, n_centres: int) -> np.ndarray:
        """``(L+1,)`` start of each l's block ``(n_centres, 2l+1, n_species·n_radial)`` in the flat buffer."""
        got = self._offsets.get(n_centres)
        if got is None:
            sr = len(self.species) * (self.max_radial + 1)
            sizes = [n_centres * (2 * l + 1) * sr for l in range(self.max_angular + 1)]
            got = np.cumsum([0] + sizes[:-1]).astype(np.int64)
            if len(self._offsets) > 16:
                self._offsets.clear()
            self._offsets[n_centres] = got
        return got

    #: pairs per sphericart call when its output goes into the kept buffers (~3 MB of gradients)
    HARMONICS_CHUNK = 8192

    def _spherical_harmonics(self, vectors: np.ndarray, gradients: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """sphericart's real spherical harmonics ``y`` (n_pairs, (L+1)²) of the pair vectors and, with
        ``gradients``, ``dy`` (n_pairs, 3, (L+1)²) Å⁻¹.

        An MD step asks for them at every step with about the same number of pairs: with more than
        ``HARMONICS_CHUNK`` pairs they go into arrays lent by the engine's
        :class:`~.buffers.BufferPool` (reused once the previous step's expansion is gone: the
        calculator drops it when the positions change), computed ``HARMONICS_CHUNK`` pairs at a time,
        instead of into new arrays. A new array of ``dy`` (19 MB for the half list of a 1536-atom
        water box, 150 MB at 12288 atoms; above glibc's 32 MB limit for reusing freed memory it is
        fresh memory from the kernel at every step: with the full list at 1536 atoms, 38 MB, 9233
        page faults and 30–90 ms of system CPU time per step on a busy machine, up to half the
        step)."""
        if self._harmonics is None:
            import sphericart

            self._harmonics = sphericart.SphericalHarmonics(self.max_angular)
        n = len(vectors)
        if n <= self.HARMONICS_CHUNK or not gradients:
            if gradients:
                return self._harmonics.compute_with_gradients(vectors)
            return self._harmonics.compute(vectors), None
        n_lm = (self.max_angular + 1) ** 2
        y, dy = self._buffers.lend("harmonics", (n, n_lm)), self._buffers.lend("harmonics gradients", (n, 3, n_lm))
        for start in range(0, n, self.HARMONICS_CHUNK):
            stop = min(n, start + self.HARMONICS_CHUNK)
            y[start:stop], dy[start:stop] = self._harmonics.compute_with_gradients(vectors[start:stop])
        return y, dy

    def _radial_values(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Two (n, L+1, n_radial) arrays for the pairs' radial values ``G_nl(r)`` and derivatives
        ``dG_nl/dr`` that an expansion with gradients keeps for its force contraction, lent by the
        engine's :class:`~.buffers.BufferPool` as the harmonics are (:meth:`_spherical_harmonics`;
        fresh memory at every step costs page faults, 25 MB at 1536 atoms)."""
        kept = self._buffers.lend("radial", (2, n, self.max_angular + 1, self.max_radial + 1))
        return kept[0], kept[1]

    def features(self, frames: Sequence, gradients: bool = False):
        """The features the models of an MD step share (the featurizer protocol, see
        :mod:`mdplugin.features`): a :class:`~mdplugin.features.cache.FeatureCache` around
        :meth:`compute`'s expansion, in which the λ-SOAP features, norms and padded arrays derived
        from it are formed once for all of them."""
        from .cache import FeatureCache

        return FeatureCache(self.compute(frames, gradients=gradients))

    def compute(self, frames: Sequence, gradients: bool = False) -> Expansion:
        """Expand the neighbour density of every atom of ``frames`` (``ase.Atoms`` or a list).

        ``gradients=True`` keeps what the position and cell derivatives need
        (:class:`PairGradients`)."""
        from .kernels import expand_pairs

        if not isinstance(frames, (list, tuple)):
            frames = [frames]
        if len(frames) == 0:
            raise DataError("no frames to compute features for")
        if len(frames) == 1:
            centre_species = np.asarray(frames[0].numbers, dtype=np.int64)
        else:
            centre_species = np.concatenate([np.asarray(a.numbers) for a in frames]).astype(np.int64)
        if len(frames) != 1 or centre_species.tobytes() != self._checked:
            frame_element_check(frames, self.species, centre_species)
            if len(frames) == 1:
                self._checked = centre_species.tobytes()  # an MD step checks its structure once
        sizes = np.fromiter((len(a) for a in frames), dtype=np.int64, count=len(frames))
        offsets = np.zeros(len(frames) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        n_centres = int(offsets[-1])
        centre_frame = np.repeat(np.arange(len(frames)), sizes)
        centre_atom = np.arange(n_centres) - offsets[centre_frame]

        spline, rows = self.spline, self.radial_rows
        if len(frames) == 1:  # an MD step: the pairs of a Verlet list, searched again only when needed
            try:
                centre, neighbour, vectors, distances = self._verlet.pairs(frames[0])
            except DataError as exc:
                raise DataError(f"frame 0: {exc}") from None
            frame = np.zeros(len(centre), dtype=np.int64)
        else:
            centre, neighbour, frame, vectors, distances = batch_pairs(frames, self.cutoff, full_list=False)
        slot, centre_slot = self._slot_of[centre_species[neighbour]], self._slot_of[centre_species[centre]]
        y, dy = self._spherical_harmonics(vectors, gradients)

        n_l, sr = self.max_angular + 1, len(self.species) * (self.max_radial + 1)
        sizes_l = [n_centres * (2 * l + 1) * sr for l in range(n_l)]
        buffer = np.zeros(sum(sizes_l))
        # the centre's own density: l = 0, its own species slot
        own = buffer[: sizes_l[0]].reshape(n_centres, len(self.species), self.max_radial + 1)
        own[np.arange(n_centres), self._slot_of[centre_species]] = spline.self_contribution()
        # with gradients the pairs' radial values and derivatives are kept for the force contraction
        if gradients:
            radial, dradial = self._radial_values(len(distances))
        else:
            radial = dradial = np.empty((0, n_l, self.max_radial + 1))
        expand_pairs(centre, neighbour, centre_slot, slot, distances, y, *rows, spline.cutoff, spline.smoothing_width,
                     len(self.species), self.offsets(n_centres), buffer, radial, dradial, gradients)
        values = _split(buffer, sizes_l, [(n_centres, 2 * l + 1, sr) for l in range(n_l)])
        grads = volumes = None
        if gradients:
            grads = PairGradients(self, n_centres, len(frames), centre, neighbour, centre_slot, slot, frame, vectors,
                                  distances, y, dy, radial, dradial)
            volumes = frame_volumes(frames)
        return Expansion(species=self.species, max_angular=self.max_angular, values=values,
                         centre_frame=centre_frame, centre_atom=centre_atom, centre_species=centre_species,
                         n_frames=len(frames), pair_gradients=grads, volumes=volumes)
