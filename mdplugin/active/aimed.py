"""Rounds of an active-learning run aimed at a spectrum (``ActiveConfig.spectrum_window``).

Each round runs ``spectrum_steps`` MD steps with the models from the last trusted state at the
thermostat temperature, keeping every ``sample_every``-th frame (the trajectory whose IR the user
wants); draws ``spectrum_samples`` dipole series from the dipole model's posterior along it; logs
the relative model band of the IR intensity in the window (a ``spectrum`` row of ``log.csv``) and
ends the run when it is at most ``spectrum_tolerance``; otherwise labels the ``batch`` frames whose
labels most narrow that band (:func:`mdplugin.active.spectral.spectral_order`) and retrains. The
next round continues the dynamics from the end of this one. A step whose models fail or that
loses an atom ends the round's trajectory there: the frame before it is labelled (the models
extrapolate there) and the dynamics go back to the trusted state with new velocities.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import ConfigError
from .spectral import spectral_order, window_band

__all__ = ["SpectrumMode"]


class SpectrumMode:
    """The spectrum-aimed methods of the loop's run state (:class:`mdplugin.active.loop._Run`)."""

    def check_spectrum_model(self) -> None:
        """A one-line :class:`ConfigError` unless the dipole model can draw posterior samples."""
        model = self.learner.models["dipole"]
        try:
            model.check_sampling()
        except ConfigError as exc:
            raise ConfigError(f"active: --spectrum-window needs a dipole model that draws posterior samples: {exc}") \
                from None

    def md_spectrum(self) -> str:
        """Rounds until the band is narrow enough or a budget is reached; returns the reason."""
        cfg = self.config
        if self.size > 1:
            raise ConfigError("active: --spectrum-window runs on one process (no mpiexec)")
        self.check_spectrum_model()
        lo, hi = cfg.spectrum_window
        dt = cfg.dt * cfg.sample_every
        while True:
            reason = self.budget_reason()
            if reason:
                return reason
            self.atoms.calc = self.learner.calculator()
            positions, broken = self.spectrum_trajectory()
            if broken or len(positions) < 3:
                if positions:
                    self.label_frame(positions[-1])
                    self.retrain("label")
                self.restore_trusted(redraw=True)
                self.checkpoint()
                continue
            frames = [self.frame(p) for p in positions]
            mean, draws = self.learner.models["dipole"].sample_predictions(
                frames, cfg.spectrum_samples, seed=int(self.rng.integers(2**32)), return_mean=True)
            band = window_band(draws, dt, (lo, hi))
            calls, _ = self.counts()
            self.store.log(event="spectrum", step=self.step, oracle_calls=calls, n_train=self.learner.n_train,
                           uncertainty=band, wall_time_s=self.wall(),
                           note=f"relative band {band:.4g} in {lo:g}-{hi:g} cm-1 ({len(frames)} frames)")
            self.say(f"step {self.step}: IR model band in {lo:g}-{hi:g} cm^-1 {band:.3g} of the intensity "
                     f"(tolerance {cfg.spectrum_tolerance:g})")
            if band <= cfg.spectrum_tolerance:
                self.checkpoint()
                return (f"spectrum band reached ({band:.3g} <= {cfg.spectrum_tolerance:g} of the IR intensity "
                        f"in {lo:g}-{hi:g} cm^-1)")
            for t in spectral_order(mean, draws, dt, (lo, hi), min(cfg.batch, cfg.max_calls - calls)):
                self.label_frame(positions[t])
            self.retrain("label")
            self.checkpoint()

    def spectrum_trajectory(self) -> tuple[list[np.ndarray], bool]:
        """``spectrum_steps`` MD steps (fewer at the step budget) from the trusted state; returns
        the kept positions (every ``sample_every``-th step, the first one included) and whether a
        step failed. The end state becomes the trusted one."""
        cfg = self.config
        end = min(self.step + cfg.spectrum_steps, cfg.steps)
        positions = [self.atoms.positions.copy()]
        start = self.step
        while self.step < end:
            self.dyn.set_temperature(temperature_K=cfg.temperature_at(self.step))
            try:
                self.dyn.step()
                broken = self.broken()
            except Exception as exc:  # noqa: BLE001 - non-finite model output
                self.say(f"step {self.step + 1}: the models failed ({exc}); round stopped")
                broken = True
            self.step += 1
            if broken:
                return positions, True
            if (self.step - start) % cfg.sample_every == 0:
                positions.append(self.atoms.positions.copy())
        self.trusted = (self.atoms.positions.copy(), self.atoms.get_momenta().copy())
        return positions, False

    def label_frame(self, positions: np.ndarray) -> None:
        """Label one frame of a round (its uncertainties and the models' predictions logged)."""
        probe = self.frame(positions)
        probe.calc = self.learner.calculator()
        u = self.learner.uncertainties(probe)
        self.label_structure(positions, u, self.learner.ratio(u), self.learner.predictions(probe), self.step)
