"""Profiling a fit on each rank: peak memory and the CPU/wall time of its phases."""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

__all__ = ["max_rss_mib", "PhaseTimer"]


def max_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``getrusage``; kB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


class PhaseTimer:
    """CPU and wall time of the phases of a fit on this rank (for finding waits and imbalance).

    Enabled by the environment variable ``MDPLUGIN_FIT_TIMES`` (any non-empty value; otherwise
    every call is a no-op): ``timer("phase")`` closes the phase that started at the previous call
    (or at construction) and :meth:`report` prints one line per phase to stderr::

        fit-times <label> rank r/P <phase> cpu <s> wall <s> faults <minor page faults>

    Phases with the same name add up. CPU time is ``time.process_time`` (user + system): a rank
    that waits in a blocking MPI call (MPICH busy-polls) shows cpu ≈ wall there, a rank that is
    descheduled by other jobs shows wall > cpu.
    """

    def __init__(self, comm: Any, label: str = "fit"):
        self.enabled = bool(os.environ.get("MDPLUGIN_FIT_TIMES"))
        self.rank, self.size, self.label = int(comm.rank), int(comm.size), label
        self.phases: dict[str, list[float]] = {}
        self._last = self._now() if self.enabled else None

    @staticmethod
    def _now() -> tuple[float, float, float]:
        return time.process_time(), time.perf_counter(), float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

    def __call__(self, phase: str) -> None:
        if not self.enabled:
            return
        now = self._now()
        got = self.phases.setdefault(phase, [0.0, 0.0, 0.0])
        for i in range(3):
            got[i] += now[i] - self._last[i]
        self._last = now

    def report(self) -> None:
        if not self.enabled:
            return
        total = [sum(v[i] for v in self.phases.values()) for i in range(3)]
        for phase, (cpu, wall, faults) in [*self.phases.items(), ("total", total)]:
            print(f"fit-times {self.label} rank {self.rank}/{self.size} {phase:<24} cpu {cpu:7.2f} "
                  f"wall {wall:7.2f} faults {faults:9.0f}", file=sys.stderr, flush=True)
