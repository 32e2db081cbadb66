"""Noticing ML dynamics that run away: the temperature or the models' uncertainty far above where
the run started.

A model driven out of its training data gives forces that pump energy into the system, and its
uncertainty grows as it goes (a water box trained on 41 frames heated from 300 to 1600 K while its
``energy_std`` rose from 0.08 to 1.2 eV). :class:`RunawayWatch` sees both on the frames
:func:`mdplugin.engines.md.run_md` writes:

* **temperature**: the mean over the last :data:`TEMPERATURE_WINDOW_FS` fs of frames (at least
  10 frames) above :data:`TEMPERATURE_FACTOR` × the set temperature (K). Averaging keeps the
  fluctuations of a small molecule (a few atoms swing by ±50 % from frame to frame) from counting;
* **uncertainty**: a recorded ``*_std`` (largest component, in its own units) above
  :data:`UNCERTAINTY_FACTOR` × its typical value at the start of the run, the median of its first
  :data:`BASELINE_RECORDS` records (the first one is often a training structure, whose uncertainty
  is near zero).

The first crossing gives one message; :func:`run_md` prints it as a warning or stops there.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["BASELINE_RECORDS", "RUNAWAY_MODES", "RunawayWatch", "TEMPERATURE_FACTOR", "TEMPERATURE_WINDOW_FS",
           "UNCERTAINTY_FACTOR"]

#: the mean temperature of the last frames above this multiple of the set temperature is a runaway
TEMPERATURE_FACTOR = 2.0
#: the temperature is averaged over the frames of this many fs (at least 10 frames)
TEMPERATURE_WINDOW_FS = 100.0
#: an uncertainty above this multiple of its value at the start of the run is a runaway
UNCERTAINTY_FACTOR = 10.0
#: records of an uncertainty whose median is its value at the start of the run
BASELINE_RECORDS = 10
#: what run_md does at a runaway: print a warning once and go on, stop the run, or nothing
RUNAWAY_MODES = ("warn", "stop", "off")


class RunawayWatch:
    """Watches the written frames of one MD run (see the module docstring).

    Parameters
    ----------
    temperature_K : the set (thermostat or initial) temperature, K; 0 switches the temperature
        criterion off.
    frame_dt_fs : time between written frames, fs.
    """

    def __init__(self, temperature_K: float, frame_dt_fs: float) -> None:
        self.temperature_K = float(temperature_K)
        window = max(10, int(np.ceil(TEMPERATURE_WINDOW_FS / frame_dt_fs)))
        self.temperatures: deque[float] = deque(maxlen=window)
        self.records: dict[str, list[float]] = {}
        self.fired = False

    def baseline(self, name: str) -> float | None:
        """The uncertainty ``name``'s value at the start (``None`` until it has enough records)."""
        values = self.records.get(name, [])
        if len(values) < BASELINE_RECORDS:
            return None
        return float(np.median(values[:BASELINE_RECORDS]))

    def observe(self, step: int, temperature: float, uncertainties: dict[str, float]) -> str | None:
        """Add one written frame (its temperature, K, and the uncertainties recorded on it, each the
        largest component); returns a one-line message at the first runaway, else ``None``."""
        if self.fired:
            return None
        self.temperatures.append(float(temperature))
        for name, value in uncertainties.items():
            self.records.setdefault(name, []).append(float(value))
        grown = []
        for name, values in self.records.items():
            base = self.baseline(name)
            if base is not None and base > 0 and values[-1] > UNCERTAINTY_FACTOR * base:
                grown.append(f"{name} {values[-1]:.3g}, {values[-1] / base:.0f}x its {base:.3g} at the start")
        mean_t = float(np.mean(self.temperatures))
        hot = (self.temperature_K > 0 and len(self.temperatures) == self.temperatures.maxlen
               and mean_t > TEMPERATURE_FACTOR * self.temperature_K)
        if not hot and not grown:
            return None
        self.fired = True
        what = []
        if hot:
            what.append(f"the temperature ran away to {mean_t:.0f} K (mean of the last {len(self.temperatures)} "
                        f"frames; {mean_t / self.temperature_K:.1f}x the {self.temperature_K:g} K set)")
        if grown:
            what.append(f"the uncertainty grew ({'; '.join(grown)})")
        return (f"step {step}: {' and '.join(what)}: the dynamics have left the models' training data (or the "
                f"time step is too long) and are not to be trusted from here; label such structures and retrain "
                f"(mdplugin active)")
