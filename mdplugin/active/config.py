"""Settings of an active-learning run (:class:`ActiveConfig`), shared by Python and the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..core.errors import ConfigError

TARGETS = ("energy", "dipole", "polarizability")

#: how segment mode picks the structures to label (see :func:`mdplugin.active.selection.select_candidates`)
SELECTIONS = ("max", "density", "ivr")

#: segment settings an exploring run (``explore=True``) takes when none are given: MD steps per
#: segment (300 steps of 0.5 fs: long enough for a torsion to swing across its barrier, which
#: segments of 100 steps with new velocities each did only slowly) and candidates kept across segments
EXPLORE_SEGMENT = 300
EXPLORE_POOL = 200
#: MD steps of a run that gives none: an exploring run (segments of ``segment`` steps, each labelling
#: at most ``batch`` structures, many of them none or ending early) gets ``EXPLORE_SEGMENTS_PER_CALL``
#: × ``segment`` × ``max_calls`` / ``batch`` steps so that its oracle-call budget, not the step budget,
#: ends it (measured on 1,2-dichloroethane with 300-step segments: 40 calls took up to 22200 steps);
#: the other loops ``DEFAULT_STEPS``.
EXPLORE_SEGMENTS_PER_CALL = 3
DEFAULT_STEPS = 2000

#: properties the oracle must label for each learned target
LABELS_FOR = {"energy": ("energy", "forces"), "dipole": ("dipole",), "polarizability": ("polarizability",)}


@dataclass
class ActiveConfig:
    """Everything that decides what an active-learning run does.

    Models
        targets : learned properties, a subset of energy (with forces), dipole, polarizability.
        energy_model : registry name of the energy model (``"soap"``).
        model : registry name of the dipole/polarizability models (``"lsoap"`` or ``"rpr"``).
        hypers : per-target hyper-parameters, e.g. ``{"energy": {"n_sparse": 100}}``.

    Uncertainty thresholds (a structure is labelled when any target is above its threshold)
        thresholds : absolute thresholds per target: energy in eV/atom (GPR std of the energy /
            n_atoms), dipole in e·Å (norm of the per-component std), polarizability in Å³
            (Frobenius norm of the per-component std). A target without one uses
        threshold_factor : × the uncertainty its models gave on held-out frames of a 2-fold
            cross-validation, in the same measure (see
            :meth:`mdplugin.active.learner.Learner.cross_validate`).

    Dynamics
        steps : MD step budget (Langevin, ``dt`` fs, friction ``friction`` 1/fs). ``None`` (the
            default): 3 × ``segment`` × ``max_calls`` / ``batch`` for an exploring run (36000 for 40
            calls with the default segments), so that it can spend its oracle calls; 2000 otherwise.
        temperature : K; a ``(T_start, T_end)`` pair ramps it linearly over ``steps``.
        temperature_cycles : the ramp is repeated this many times over ``steps`` (a sawtooth:
            ``T_start`` → ``T_end`` every ``steps / temperature_cycles`` steps), so that the
            whole temperature range is visited early in the run, not only at its end.
        seed : seed of the thermostat's random numbers (and of the initial velocities).

    Budgets (the run ends cleanly at the first one reached)
        max_calls : labelled frames (oracle calls) counted after the initial set.
        wall_time : seconds of wall time, summed over the run and its resumes (``None``: no limit).

    Initial data
        n_initial : frames labelled from a short reference MD run with the oracle when no
            labelled frames are given (every ``initial_stride`` steps after ``initial_stride``).
        checkpoint_every : MD steps between checkpoints of the trusted state.
        max_retries : labels in a row at the same trusted state before its velocities are redrawn.

    Selection (segments; ``segment=0`` keeps the step-by-step mode above)
        segment : MD steps per segment. The models run ``segment`` steps, keeping every
            ``sample_every``-th structure as a candidate with its uncertainty; at the end the most
            uncertain candidate is labelled (if over its threshold), then up to ``batch - 1``
            more among those over the threshold, each the farthest (sorted interatomic distances)
            from the ones already picked; one retraining follows. A segment stops early at a
            candidate over ``stop_factor`` × its threshold (the models extrapolate; the dynamics
            are not trusted beyond it) and the next one starts from the segment's start state
            with new velocities; otherwise from its end.
        sample_every : MD steps between candidates in a segment.
        batch : labels per segment (one retraining per segment).
        stop_factor : uncertainty/threshold ratio that ends a segment early (≥ 1).
        selection : ``"ivr"`` (default: the candidate whose label most lowers the models' own GP
            posterior variance summed over all candidates; ``"density"`` when no target has a GP
            model), ``"max"`` (the most uncertain candidate, then farthest-point for a batch) or
            ``"density"`` (the candidate that removes the most uncertainty from all candidates by a
            sorted-distance Gaussian: uncertain and representative); see
            :func:`mdplugin.active.selection.select_candidates`.
        pool : candidates kept across segments (the latest ``pool``), all rescored with the
            current models before each pick, so a label is the most uncertain of many segments;
            0: only the segment's own candidates.
        walkers : every segment starts from a random frame of the initial labelled set with
            Maxwell–Boltzmann velocities at the current temperature (independent short walkers
            covering the initial set's conformers) instead of continuing one trajectory.

    Exploration (the default; ``explore=False`` is the loop before it, which follows one trajectory)
        explore : run in segments (``segment`` 300 and ``pool`` 200 when they are 0) and start every
            segment (every replica under MPI) from the structure, among the labelled frames and the
            pool's candidates below ``stop_factor`` (within ``explore_window``), farthest from all
            earlier segment starts (sorted
            interatomic distances): replicas from diverse starts that push outwards from what is
            known, instead of one trajectory that stays in its basin; with Maxwell–Boltzmann
            velocities at the segment's temperature. See :mod:`mdplugin.active.explore`.
            ``walkers=True`` turns it off (the walkers start from the initial frames instead).
        explore_heat : the segments' temperatures cycle through ``T × (1, (1 + h)/2, h)`` with
            ``h = explore_heat`` (≥ 1; ``T`` the thermostat temperature of the step): hot segments
            cross barriers the dynamics at ``T`` would cross rarely.
        explore_window : only structures whose potential energy (the oracle's for labelled frames,
            the models' for candidates) lies between ``w sqrt(3N/2) kT`` below and
            ``kT (3N/2 + w sqrt(3N/2))`` above the lowest labelled energy (``w = explore_window``,
            ``T`` the thermostat temperature without the hot-segment factor, N atoms) are segment
            starts: thermally accessible ones, not the distorted structures a hot segment on a young
            model produces, nor the holes of the energy model far below every labelled energy.
            ``None``: no window (the rule before); it needs the energy target.
        explore_contact : a structure with two atoms nearer than this fraction of the sum of their
            covalent radii (0.7: 0.43 Å for H–H) is a hole of the energy model: it ends its segment
            and is neither a candidate nor labelled (no oracle call). ``None``: not checked.
        explore_bonds : so is a structure whose bonds (pairs nearer than this × the sum of their
            covalent radii; 1.3: a C–H bond breaks at 1.39 Å) differ from those of its segment's
            start: a bond broken or formed (the young model's dissociation). ``None``: not checked
            (a run meant to see reactions).
        explore_label_window : a labelled frame whose oracle energy lies more than
            ``kT (3N/2 + w sqrt(3N/2))`` above the lowest labelled energy of its composition
            (``w = explore_label_window``, ``T`` the hottest temperature of the run, hot segments
            included) is refused: written to ``refused.xyz`` (counted as an oracle call, never
            labelled again), not to ``data.xyz``, so neither the models nor the relative thresholds
            see it. ``None``: every label is kept (the rule before). Both only when exploring.

    Aimed at a spectrum (``spectrum_window`` given; the run goes in rounds instead of segments)
        spectrum_window : ``(low, high)`` cm⁻¹ of the IR the run is for. Each round runs
            ``spectrum_steps`` MD steps with the models at the thermostat temperature (keeping every
            ``sample_every``-th frame), draws ``spectrum_samples`` dipole series from the dipole
            model's posterior, and stops the run when the relative model band of the IR intensity in
            the window is at most ``spectrum_tolerance``; otherwise it labels the ``batch`` frames
            that most narrow it and retrains (:mod:`mdplugin.active.spectral`). Needs the dipole
            target and a model that draws posterior samples (``lsoap``).
        spectrum_tolerance : relative band width ((P95 − P5) / mean of the window intensity) at
            which the run stops.
        spectrum_steps : MD steps of a round's trajectory (its length sets the resolution).
        spectrum_samples : posterior draws per round.
    """

    targets: tuple[str, ...] = ("energy", "dipole", "polarizability")
    energy_model: str = "soap"
    model: str = "lsoap"
    hypers: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    threshold_factor: float = 1.0
    steps: int | None = None
    dt: float = 0.5
    friction: float = 0.01
    temperature: tuple[float, float] = (300.0, 300.0)
    temperature_cycles: int = 1
    seed: int = 0
    max_calls: int = 200
    wall_time: float | None = None
    n_initial: int = 10
    initial_stride: int = 20
    checkpoint_every: int = 50
    max_retries: int = 5
    segment: int = 0
    sample_every: int = 10
    batch: int = 1
    stop_factor: float = 10.0
    walkers: bool = False
    pool: int = 0
    selection: str = "ivr"
    explore: bool = True
    explore_heat: float = 2.0
    explore_window: float | None = 3.0
    explore_contact: float | None = 0.7
    explore_bonds: float | None = 1.3
    explore_label_window: float | None = 20.0
    spectrum_window: tuple[float, float] | None = None
    spectrum_tolerance: float = 0.1
    spectrum_steps: int = 2000
    spectrum_samples: int = 32

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        if isinstance(self.temperature, (int, float)):
            self.temperature = (float(self.temperature), float(self.temperature))
        self.temperature = tuple(float(t) for t in self.temperature)
        if self.spectrum_window is not None:
            self.spectrum_window = tuple(float(v) for v in self.spectrum_window)
        if self.walkers:  # walkers from the initial frames were asked for: they replace the exploring starts
            self.explore = False
        if self.explore and self.segment == 0:
            self.segment = EXPLORE_SEGMENT
            self.pool = self.pool or EXPLORE_POOL
        if self.steps is None:
            exploring = self.explore and self.segment > 0 and self.spectrum_window is None and self.batch >= 1
            calls = max(int(self.max_calls), 0)  # a bad max_calls is reported by validate()
            self.steps = (EXPLORE_SEGMENTS_PER_CALL * self.segment * -(-calls // self.batch)
                          if exploring else DEFAULT_STEPS)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting."""
        if not self.targets:
            raise ConfigError("active: no targets (use energy, dipole, polarizability)")
        for t in self.targets:
            if t not in TARGETS:
                raise ConfigError(f"active: unknown target {t!r} (known: {', '.join(TARGETS)})")
        for t in self.thresholds:
            if t not in TARGETS:
                raise ConfigError(f"active: threshold for unknown target {t!r}")
            if not self.thresholds[t] > 0:
                raise ConfigError(f"active: the {t} threshold must be positive, got {self.thresholds[t]}")
        for t in self.hypers:
            if t not in TARGETS:
                raise ConfigError(f"active: hyper-parameters for unknown target {t!r}")
        if not self.threshold_factor > 0:
            raise ConfigError(f"active: --threshold-factor must be positive, got {self.threshold_factor}")
        if len(self.temperature) != 2 or min(self.temperature) <= 0:
            raise ConfigError(f"active: temperature must be positive (K), got {self.temperature}")
        if isinstance(self.temperature_cycles, bool) or int(self.temperature_cycles) != self.temperature_cycles \
                or self.temperature_cycles < 1:
            raise ConfigError(f"active: temperature_cycles must be a positive integer, got {self.temperature_cycles}")
        nonneg = ("steps", "max_calls", "n_initial", "segment", "pool")
        for name in ("steps", "max_calls", "n_initial", "initial_stride", "checkpoint_every", "max_retries",
                     "segment", "sample_every", "batch", "pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < (0 if name in nonneg else 1):
                raise ConfigError(f"active: {name} must be a {'non-negative' if name in nonneg else 'positive'} integer, got {value}")
        if not self.stop_factor >= 1:
            raise ConfigError(f"active: stop_factor must be at least 1, got {self.stop_factor}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"active: unknown selection {self.selection!r} (known: {', '.join(SELECTIONS)})")
        if not self.explore_heat >= 1:
            raise ConfigError(f"active: explore_heat must be at least 1, got {self.explore_heat}")
        if self.explore_window is not None and not self.explore_window >= 0:
            raise ConfigError(f"active: explore_window must be at least 0 (or None), got {self.explore_window}")
        if self.explore_contact is not None and not 0 < self.explore_contact < 1:
            raise ConfigError(f"active: explore_contact must lie between 0 and 1 (or None), got {self.explore_contact}")
        if self.explore_bonds is not None and not self.explore_bonds > 1:
            raise ConfigError(f"active: explore_bonds must be above 1 (or None), got {self.explore_bonds}")
        if self.explore_label_window is not None and not self.explore_label_window >= 0:
            raise ConfigError(f"active: explore_label_window must be at least 0 (or None), "
                              f"got {self.explore_label_window}")
        if self.spectrum_window is not None:
            self._validate_spectrum()
        if self.walkers and not self.segment:
            raise ConfigError("active: walkers need segments (segment > 0)")
        if not self.dt > 0 or not self.friction >= 0:
            raise ConfigError("active: dt must be positive and friction non-negative")
        if self.wall_time is not None and not self.wall_time > 0:
            raise ConfigError(f"active: wall time must be positive (s), got {self.wall_time}")

    def _validate_spectrum(self) -> None:
        from ..models.base import Model, get_model_class
        from .spectral import check_window

        if "dipole" not in self.targets:
            raise ConfigError("active: --spectrum-window aims at the IR spectrum and needs the dipole target "
                              "(--targets ...,dipole)")
        if get_model_class(self.model).check_sampling is Model.check_sampling:  # never draws (else: checked once fitted)
            raise ConfigError(f"active: the {self.model} dipole model cannot draw posterior samples, so it has no "
                              f"spectrum band to aim at; use --model lsoap with --spectrum-window")
        for name in ("spectrum_steps", "spectrum_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < (2 if name == "spectrum_samples" else 1):
                raise ConfigError(f"active: {name} must be a positive integer (samples at least 2), got {value}")
        if not self.spectrum_tolerance > 0:
            raise ConfigError(f"active: spectrum_tolerance must be positive, got {self.spectrum_tolerance}")
        check_window(self.spectrum_window, self.dt * self.sample_every, self.spectrum_steps // self.sample_every + 1,
                     what=f"a round's spectrum ({self.spectrum_steps} steps of {self.dt:g} fs, a frame every "
                          f"{self.sample_every})")
        if self.steps < self.spectrum_steps:
            raise ConfigError(f"active: --steps {self.steps} is shorter than one spectrum round "
                              f"(--spectrum-steps {self.spectrum_steps})")

    def labels(self) -> list[str]:
        """Properties the oracle labels."""
        return [p for t in self.targets for p in LABELS_FOR[t]]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        d["temperature"] = list(self.temperature)
        if self.spectrum_window is not None:
            d["spectrum_window"] = list(self.spectrum_window)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ActiveConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d.setdefault("explore", False)  # a run folder written before exploration keeps its loop
        d.setdefault("explore_window", None)  # ... and one written before the energy window keeps its starts
        d.setdefault("explore_contact", None)  # ... and one written before the hole filters keeps its labels
        d.setdefault("explore_bonds", None)
        d.setdefault("explore_label_window", None)
        return cls(**d)

    def heat(self, segment_index: int) -> float:
        """Factor on :meth:`temperature_at` for the ``segment_index``-th segment: the exploring
        runs' ladder ``(1, (1 + h)/2, h)``, ``h = explore_heat``, cycled over the segments (1 when
        not exploring)."""
        if not self.explore or not self.segment:
            return 1.0
        ladder = (1.0, 0.5 * (1.0 + self.explore_heat), self.explore_heat)
        return ladder[int(segment_index) % len(ladder)]

    def temperature_at(self, step: int) -> float:
        """Thermostat temperature (K) at ``step`` (linear ramp over ``steps``, repeated
        ``temperature_cycles`` times)."""
        t0, t1 = self.temperature
        if self.steps <= 0:
            return t0
        frac = min(max(step / self.steps, 0.0), 1.0)
        cycles = int(self.temperature_cycles)
        if cycles > 1 and frac < 1.0:
            frac = (frac * cycles) % 1.0
        return t0 + (t1 - t0) * frac

    def hottest(self) -> float:
        """The hottest thermostat temperature of the run, K (ramp and hot segments included)."""
        return max(self.temperature) * (self.explore_heat if self.explore and self.segment else 1.0)
