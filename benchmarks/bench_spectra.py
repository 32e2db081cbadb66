"""Speed of the spectra core: FFT autocorrelation against a direct lag-by-lag sum, and a full
IR/Raman spectrum of a long series. Prints figures (ratios within the same process).

    python benchmarks/bench_spectra.py [n_frames] [depth]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from mdplugin.spectra import ir_spectrum, raman_spectrum
from mdplugin.spectra.correlation import correlation_sums


def direct_sums(x: np.ndarray, depth: int) -> np.ndarray:
    """Reference: S(k) = Σ_t x(t)·x(t+k), one vectorised dot product per lag."""
    n = len(x)
    return np.array([np.einsum("ij,ij->", x[: n - k], x[k:]) for k in range(depth + 1)])


def best_of(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    t_fft = best_of(lambda: correlation_sums(x, depth))
    t_direct = best_of(lambda: direct_sums(x, depth), repeat=1)
    err = np.abs(correlation_sums(x, depth) - direct_sums(x[:, :], depth)).max() / n
    print(f"autocorrelation, {n} frames x 3, depth {depth}: FFT {t_fft * 1e3:.1f} ms, "
          f"direct {t_direct * 1e3:.0f} ms, speed-up x{t_direct / t_fft:.0f} (max diff {err:.1e})")
    t_ir = best_of(lambda: ir_spectrum([x], 0.5, 300.0, depth=depth * 0.5))
    alpha = rng.normal(size=(n, 3, 3))
    t_raman = best_of(lambda: raman_spectrum([alpha], 0.5, 300.0, depth=depth * 0.5))
    print(f"full spectrum incl. block errors, {n} frames: IR {t_ir:.2f} s, Raman {t_raman:.2f} s "
          f"({n / t_ir / 1e6:.2f} M frames/s IR)")


if __name__ == "__main__":
    main()
