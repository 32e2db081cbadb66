"""Segment mode of the active-learning loop (``ActiveConfig.segment > 0``).

The models run ``segment`` MD steps at a time and keep a candidate every ``sample_every`` steps;
at the end of the segment the most uncertain candidates over their threshold (``batch`` of them,
:func:`mdplugin.active.selection.select_candidates`) are labelled before one retraining. ``pool``
keeps candidates across segments (rescored with the current models), ``walkers`` restarts every
segment from an initial frame, and a candidate over ``stop_factor`` × its threshold ends the
segment early (the next one starts from the segment's start with new velocities). When exploring,
a structure in a hole of the energy model ends its segment too, and a label far above the labelled
energies is refused (:mod:`mdplugin.active.explore`). Under MPI every
rank runs its own walker; the candidates are gathered and the batch labelled in parallel
(:mod:`mdplugin.active.ranks`).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ..core.errors import OracleError
from ..learn.parallel import split_indices
from . import ranks
from .explore import above_label_window, bond_graph, farthest_starts, label_window_top, short_contact, thermal_window
from .selection import _distance_signature, select_candidates
from .store import structure_hash

__all__ = ["SegmentMode"]

#: oracle failures in a row on picked candidates before the run stops with the error
MAX_ORACLE_FAILURES = 3


class SegmentMode:
    """The segment-mode methods of the loop's run state (:class:`mdplugin.active.loop._Run`,
    which provides ``config``, ``learner``, ``store``, ``comm``/``rank``/``size``, ``rng``,
    ``step``, ``atoms``, ``dyn``, ``trusted`` and the methods ``say``, ``counts``, ``data``,
    ``budget_reason``, ``set_state``, ``restore_trusted``, ``broken``, ``label_structure``,
    ``log_label``, ``retrain`` and ``checkpoint``)."""

    def md_segments(self) -> str:
        """Segments until a budget is reached; returns the reason (see the module docstring)."""
        cfg = self.config
        self.atoms.calc = self.learner.calculator()
        while True:
            reason = self.budget_reason()
            if reason:
                return reason
            self.heat = cfg.heat(getattr(self, "n_segments", 0))
            self.n_segments = getattr(self, "n_segments", 0) + 1
            if cfg.explore:
                temperature = cfg.temperature_at(self.step) * self.heat
                self.set_state(self.explore_start(), None, temperature)
                excess = getattr(self, "start_excess", float("nan"))
                self.store.log(event="segment", step=self.step, wall_time_s=self.wall(),
                               note=f"start {structure_hash(self.atoms)} at {temperature:.0f} K"
                                    + (f", {excess:.3f} eV above the lowest labelled energy"
                                       if np.isfinite(excess) else ""))
            elif cfg.walkers:
                self.set_state(self.walker_start(), None)
            start = self.trusted
            self.start_bonds = None  # the bonds of this segment's start (taken at the first check)
            candidates, stopped = self.run_segment()
            if self.size > 1:
                candidates = self.gather_candidates(candidates)
            self.recent = candidates  # the starts' choice without a pool
            if cfg.pool:
                candidates = self.rescored_pool(candidates)
            calls, _ = self.counts()
            labelled = self.store.origins.get("md", 0)
            picked = select_candidates(candidates, min(cfg.batch, cfg.max_calls - calls), cfg.selection,
                                       learner=self.learner, template=self.atoms)
            if self.size > 1:
                self.label_batch(picked)
                if cfg.pool:
                    self.pool = [k for k in self.pool if not any(k is c for c in picked)]
                picked_here = []
            else:
                picked_here = picked
            for c in picked_here:
                if c["predicted"] is None:
                    c["predicted"] = self.learner.predictions(self.probe(c["positions"]))
                try:
                    self.label_structure(c["positions"], c["u"], c["ratio"], c["predicted"], c["step"])
                    self.oracle_failures = 0
                except OracleError as exc:
                    self.drop_failed(c, exc)
                if cfg.pool:
                    self.pool = [k for k in self.pool if k is not c]
            if self.store.origins.get("md", 0) > labelled:  # (a refused label is not training data)
                self.retrain("label")
                self.atoms.calc = self.learner.calculator()
            if stopped:
                self.trusted = start
                self.restore_trusted(redraw=True)
                self.atoms.calc = self.learner.calculator()
            else:
                self.trusted = (self.atoms.positions.copy(), self.atoms.get_momenta().copy())
            self.checkpoint()

    def hole(self) -> bool:
        """Whether the current structure is in a hole of the energy model (only when exploring):
        two atoms nearer than ``explore_contact`` × their covalent-radius sum
        (:func:`mdplugin.active.explore.short_contact`), or bonds (``explore_bonds``,
        :func:`mdplugin.active.explore.bond_graph`) other than those of the segment's start. Logged
        as a ``hole`` row; the segment ends there."""
        cfg = self.config
        if not cfg.explore or cfg.spectrum_window is not None:
            return False
        note = None
        if cfg.explore_contact is not None:
            contact = short_contact(self.atoms, cfg.explore_contact)
            if contact is not None:
                i, j, d = contact
                sym = self.atoms.get_chemical_symbols()
                note = f"{sym[i]}{i}-{sym[j]}{j} {d:.3f} A (< {cfg.explore_contact:g} x covalent radii)"
        if note is None and cfg.explore_bonds is not None:
            if getattr(self, "start_bonds", None) is None:
                start = Atoms(numbers=self.atoms.numbers, positions=self.trusted[0], cell=self.atoms.cell,
                              pbc=self.atoms.pbc)
                self.start_bonds = bond_graph(start, cfg.explore_bonds)
            bonds = bond_graph(self.atoms, cfg.explore_bonds)
            if bonds != self.start_bonds:
                sym = self.atoms.get_chemical_symbols()
                changed = [f"{sym[i]}{i}-{sym[j]}{j} {'broken' if (i, j) in self.start_bonds else 'formed'}"
                           for i, j in sorted(bonds ^ self.start_bonds)]
                note = ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
        if note is None:
            return False
        self.store.log(event="hole", step=self.step + 1, wall_time_s=self.wall(), note=note + "; segment ended")
        return True

    def refuse_label(self, frame: Atoms, labels: dict, step: int, key: str, rank: int | None = None) -> bool:
        """Whether a labelled frame is refused (:func:`mdplugin.active.explore.above_label_window`;
        only when exploring): its oracle energy lies more than the label window above the lowest
        labelled energy of its composition at the run's hottest temperature. A refused frame goes to
        ``refused.xyz`` (an oracle call, never labelled again) and a ``refused`` row of log.csv, not
        to data.xyz: neither the models nor the relative thresholds see it."""
        cfg = self.config
        if not cfg.explore or cfg.spectrum_window is not None or cfg.explore_label_window is None \
                or "energy" not in labels:
            return False
        reference = self.lowest_energy(frame.numbers)
        energy = float(np.asarray(labels["energy"], dtype=float))
        if reference is None or not above_label_window(energy, reference, len(frame), cfg.hottest(),
                                                       cfg.explore_label_window):
            return False
        self.store.append_refused(frame, labels, step=step, key=key, rank=rank)
        top = label_window_top(len(frame), cfg.hottest(), cfg.explore_label_window)
        calls, _ = self.counts()
        self.say(f"label refused {key} step {step}: {energy - reference:.3g} eV above the lowest labelled energy "
                 f"(window {top:.3g} eV)")
        self.store.log(event="refused", step=step, oracle_calls=calls, wall_time_s=self.wall(),
                       note=f"{key}: {energy - reference:.4g} eV above the lowest labelled energy "
                            f"(window {top:.3g} eV at {cfg.hottest():.0f} K)")
        return True

    def lowest_energy(self, numbers: np.ndarray) -> float | None:
        """The lowest oracle energy (eV) of the labelled frames with the same composition as
        ``numbers`` (sorted atomic numbers), ``None`` when there is none (or no energy labels)."""
        data = self.data()
        if data.energy is None or not len(data.energy):
            return None
        composition = np.sort(np.asarray(numbers))
        same = [i for i, a in enumerate(data.frames)
                if len(a) == len(composition) and np.array_equal(np.sort(a.numbers), composition)]
        energies = np.asarray(data.energy, dtype=float)[same]
        energies = energies[np.isfinite(energies)]
        return float(energies.min()) if len(energies) else None

    def drop_failed(self, candidate: dict, exc: OracleError) -> None:
        """An oracle failure on a picked candidate (e.g. an SCF that does not converge on a structure
        a hot segment on a young model distorted): logged as an ``oracle-failed`` row, the structure
        dropped, the run goes on; the ``MAX_ORACLE_FAILURES``-th failure in a row is raised (the oracle
        itself is broken)."""
        self.oracle_failures = getattr(self, "oracle_failures", 0) + 1
        if self.oracle_failures >= MAX_ORACLE_FAILURES:
            raise OracleError(f"{exc} ({self.oracle_failures} oracle failures in a row)") from exc
        self.say(f"step {candidate['step']}: {exc}; structure dropped")
        self.store.log(event="oracle-failed", step=candidate["step"], wall_time_s=self.wall(),
                       note=" ".join(str(exc).split())[:200])

    def probe(self, positions: np.ndarray) -> Atoms:
        """A structure at ``positions`` (n_atoms, 3) Å with the models as its calculator."""
        probe = self.frame(positions)
        probe.calc = self.learner.calculator()
        return probe

    def walker_start(self) -> np.ndarray:
        """Positions of a random frame of the initial labelled set (the first frames of data.xyz)."""
        if getattr(self, "_initial_positions", None) is None:
            _, n_init = self.counts()
            frames = self.data().frames[:max(n_init, 1)]
            self._initial_positions = [np.array(a.positions) for a in frames]
        return self._initial_positions[int(self.rng.integers(len(self._initial_positions)))]

    def explore_start(self) -> np.ndarray:
        """Positions (n_atoms, 3) Å to start this rank's next segment from: among the labelled frames
        and the pool's candidates (without a pool: the last segment's) that are thermally accessible
        (:func:`mdplugin.active.explore.thermal_window` at the thermostat temperature of the step),
        the farthest from every earlier segment start (:func:`mdplugin.active.explore.farthest_starts`;
        one pick per rank, rank r takes the r-th; the first earlier start is the run's start
        structure). Candidates count below ``stop_factor`` × their threshold (their energy is the
        models'); with ``explore_window`` None (the rule before) there is no window."""
        frames = self.data().frames
        sigs = getattr(self, "_label_signatures", [])
        sigs = sigs + [_distance_signature(a.positions, self.atoms) for a in frames[len(sigs):]]
        self._label_signatures = sigs
        known = getattr(self, "pool", []) if self.config.pool else getattr(self, "recent", [])
        pool = [c for c in known if c["ratio"] <= self.config.stop_factor]
        structures = [a.positions for a in frames] + [c["positions"] for c in pool]
        signatures = np.array(sigs + [_distance_signature(c["positions"], self.atoms) for c in pool])
        excess = self.start_energies(pool)
        if excess is not None and self.config.explore_window is not None:
            keep = np.flatnonzero(thermal_window(excess, 0.0, len(self.atoms), self.config.temperature_at(self.step),
                                                 self.config.explore_window))
            structures, signatures, excess = [structures[i] for i in keep], signatures[keep], excess[keep]
        earlier = getattr(self, "_start_signatures", None)
        if earlier is None:
            earlier = _distance_signature(self.atoms.positions, self.atoms)[None, :]
        picks = farthest_starts(signatures, earlier, self.size)
        self._start_signatures = np.vstack([earlier, signatures[picks]])
        self.start_excess = float("nan") if excess is None else float(excess[picks[self.rank]])
        return np.array(structures[picks[self.rank]], dtype=float)

    def start_energies(self, pool: list[dict]) -> np.ndarray | None:
        """Potential energies (eV) of the labelled frames then the ``pool`` candidates above the
        lowest labelled energy (the oracle's of the labelled frames, the models' of the candidates;
        NaN where unknown), or ``None`` without energy labels."""
        energy = self.data().energy
        if energy is None or not len(energy):
            return None
        energies = np.concatenate([np.asarray(energy, dtype=float), [c.get("energy", np.nan) for c in pool]])
        return energies - float(np.min(energy))

    def run_segment(self) -> tuple[list[dict], bool]:
        """Up to ``segment`` MD steps; returns the candidates (every ``sample_every`` steps and the
        last step: ``positions``, ``u``, ``ratio``, ``predicted``, ``step``) and whether the
        segment stopped early (failed step, lost atom, or ratio over ``stop_factor``)."""
        cfg = self.config
        start, end = self.step, min(self.step + cfg.segment, cfg.steps)
        candidates: list[dict] = []
        while self.step < end:
            self.dyn.set_temperature(temperature_K=cfg.temperature_at(self.step) * getattr(self, "heat", 1.0))
            sample = (self.step + 1 - start) % cfg.sample_every == 0 or self.step + 1 == end
            try:
                self.dyn.step()
                broken = self.broken()
                if not broken and sample:
                    broken = self.hole()
                if not broken and sample:
                    u = self.learner.uncertainties(self.atoms)
                    ratio = self.learner.ratio(u)
                    self.note_ratio(ratio)
                    broken = not np.isfinite(ratio)
                    if not broken:
                        candidates.append({"positions": self.atoms.positions.copy(), "u": u, "ratio": ratio,
                                           "predicted": self.learner.predictions(self.atoms),
                                           "energy": self.model_energy(), "step": self.step + 1})
            except Exception as exc:  # non-finite model output
                self.say(f"step {self.step + 1}: the models failed ({exc}); segment stopped")
                broken = True
            self.step += 1
            if broken:
                return candidates, True
            if candidates and candidates[-1]["step"] == self.step and candidates[-1]["ratio"] > cfg.stop_factor:
                return candidates, True
        return candidates, False

    def model_energy(self) -> float:
        """The models' potential energy (eV) of the current structure, NaN without an energy model."""
        if "energy" not in self.learner.models:
            return float("nan")
        return float(self.atoms.get_potential_energy())

    def rescored_pool(self, candidates: list[dict]) -> list[dict]:
        """Add a segment's candidates to the pool (the latest ``config.pool`` kept) and rescore
        all of them with the current models."""
        pool = getattr(self, "pool", [])
        pool = (pool + [dict(c, predicted=None) for c in candidates])[-self.config.pool:]
        frames = [self.frame(c["positions"]) for c in pool]
        mine = split_indices(len(frames), self.rank, self.size)  # under MPI each rank scores a share
        try:
            parts, error = ranks.each(self.comm, lambda: self.learner.uncertainties_of([frames[i] for i in mine]))
            if error is not None:
                raise error
            us = [u for part in parts for u in part]
            for c, u in zip(pool, us):
                c["u"], c["ratio"] = u, self.learner.ratio(u)
        except Exception as exc:  # noqa: BLE001 - a candidate the models cannot evaluate
            self.say(f"pool: rescoring failed ({exc}); the segment's own candidates are used")
            return [dict(c, predicted=None) for c in candidates]
        self.pool = [c for c in pool if np.isfinite(c["ratio"])]
        return self.pool

    def gather_candidates(self, candidates: list[dict]) -> list[dict]:
        """Every rank's candidates of a segment, in rank order, each with its ``rank``; the
        step counter becomes the largest over the ranks (a segment may stop early on some)."""
        candidates, self.step = ranks.gather_candidates(self.comm, candidates, self.step)
        return candidates

    def label_batch(self, picked: list[dict]) -> None:
        """Label the picked candidates in parallel (MPI): rank r labels the ones ``r, r + P, …``
        of the batch; every rank gets all labels, which are recorded (rank 0 appends to data.xyz
        and logs) in batch order. An oracle error on any rank is raised on every rank after the
        labels that did come back are written."""
        todo: list[tuple[dict, Atoms, str]] = []
        for c in picked:
            frame = self.frame(c["positions"])
            key = structure_hash(frame)
            if not self.store.has(key) and key not in {k for _, _, k in todo}:
                todo.append((c, frame, key))
        if not todo:
            return
        thr = self.learner.thresholds()
        for c, _, _ in todo:
            self.say(f"labelling step {c['step']} of rank {c['rank']} (uncertainty {c['ratio']:.2f} x threshold)")

        def predict(i: int) -> dict:
            c, frame, _ = todo[i]
            return c["predicted"] if c["predicted"] is not None else self.learner.predictions(self.probe(frame.positions))

        done, error = ranks.label_shares(self.comm, len(todo), predict, lambda i: self.learner.label(todo[i][1]))
        for i, (c, frame, key) in enumerate(todo):
            if i not in done:
                continue
            labels, predicted = done[i]
            if self.refuse_label(frame, labels, c["step"], key, rank=c["rank"]):
                continue
            err = self.learner.errors(predicted, labels, len(frame))
            self.learner.record_errors(err)
            self.store.append_frame(frame, labels, step=c["step"], origin="md", key=key, rank=c["rank"])
            calls, _ = self.counts()
            self.say(f"label written {key} step {c['step']} call {calls} rank {c['rank']}")
            self.log_label(c["step"], calls, c["ratio"], f"{key} rank {c['rank']}", c["u"], err, thr)
        if error is not None:
            raise ranks.AllRanks(error)
