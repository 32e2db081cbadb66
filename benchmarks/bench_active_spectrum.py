"""Labels aimed at a spectrum against random labels (issue 28, point 4), 1,2-dichloroethane, GFN2-xTB.

The user wants the IR of one trajectory in a window (default 600-800 cm⁻¹, the C–Cl stretches).
The trajectory is a tblite Langevin run at 300 K (anti start, seed 911, 2 ps, a frame every 4 fs,
friction 0.002 fs⁻¹); its GFN2-xTB dipoles give the reference spectrum. Every arm starts from the
same 10 labelled frames per seed (random frames of an independent 450 K pool, anti and gauche
starts, seeds 912/913), fits the λ-SOAP dipole model of ``mdplugin active`` (the benchmark's
compressed hypers, regulariser 1e-4) and adds ``--batch`` labels per round, chosen among the
trajectory's frames by:

* ``band``: :func:`mdplugin.active.spectral.spectral_order` on ``--samples`` posterior draws along
  the trajectory (what ``mdplugin active --spectrum-window`` labels each round);
* ``std``: the frames of largest posterior dipole std (the frame-error criterion), each next pick
  at least 10 frames (40 fs) from the earlier ones;
* ``random``: random frames.

The trajectory is fixed (the dynamics are GFN2-xTB's), so only the choice of frames differs, and
the labels are the trajectory's own dipoles (each label counts one oracle call). After each
round: the **spectrum error** ``∫_W |I_model − I_ref| / ∫_W I_ref`` (``mdplugin.spectra.ir_spectrum``
of the model's mean dipoles against the reference dipoles, 300 K, harmonic correction), the
**intensity error** ``|∫_W I_model − ∫_W I_ref| / ∫_W I_ref`` (the quantity the band is about), the
**frame error** (dipole RMSE over the trajectory's frames, % of their std) and, for ``band``, the
relative model band that the stopping rule reads. The script prints, per arm, the oracle calls after
which each error stays at or below its goal (``--spectrum-goal``, ``--frame-goal``) per seed, the medians and
the ratio random / arm, and writes ``bench_active_spectrum.json``.

    python benchmarks/bench_active_spectrum.py [--out DIR] [--seeds 0-9] [--arms band,std,random]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

HYPERS = {"n_components": 64, "n_sparse": 100, "n_sparse_l0": 200, "regularizer_l1": 1e-4}
DT_FRAME = 4.0  # fs between trajectory frames (8 steps of 0.5 fs)


def data(out: Path):
    """(trajectory, pool): the labelled spectrum trajectory and the pool of initial frames, cached."""
    from mdplugin.structures.data import read_dataset, write_dataset

    traj_path, pool_path = out / "spectrum_traj.xyz", out / "spectrum_pool.xyz"
    if not traj_path.exists() or not pool_path.exists():
        from make_trajectories import dichloroethane, langevin_frames, tblite_calculator
        from mdplugin.oracles.label import label_frames

        t0 = time.perf_counter()
        traj = langevin_frames(dichloroethane("anti"), 300, 500, 911, stride=8, equilibration_steps=400,
                               friction_per_fs=0.002)
        write_dataset(traj_path, label_frames(traj, tblite_calculator(), ("dipole",)))
        pool = (langevin_frames(dichloroethane("anti"), 450, 100, 912, stride=20, equilibration_steps=400)
                + langevin_frames(dichloroethane("gauche"), 450, 100, 913, stride=20, equilibration_steps=400))
        write_dataset(pool_path, label_frames(pool, tblite_calculator(), ("dipole",)))
        print(f"reference data made in {time.perf_counter() - t0:.0f} s", flush=True)
    return read_dataset(traj_path, properties=["dipole"]), read_dataset(pool_path, properties=["dipole"])


def ir(dipoles: np.ndarray):
    from mdplugin.spectra import ir_spectrum

    r = ir_spectrum([dipoles], dt=DT_FRAME, temperature=300.0)
    return r.wavenumber, r.components["ir"]


def spectrum_errors(model_dipoles: np.ndarray, reference: tuple, window: tuple) -> tuple[float, float]:
    """(shape error ∫_W |I_model − I_ref| / ∫_W I_ref, intensity error |∫_W I_model − ∫_W I_ref| / ∫_W I_ref)."""
    nu, ref = reference
    _, got = ir(model_dipoles)
    w = (nu >= window[0]) & (nu <= window[1])
    total = np.trapezoid(ref[w], nu[w])
    return (float(np.trapezoid(np.abs(got[w] - ref[w]), nu[w]) / total),
            float(abs(np.trapezoid(got[w], nu[w]) - total) / total))


def fit(frames, dipoles):
    from mdplugin.models import build

    return build("lsoap", target="dipole", **HYPERS).fit(list(frames), np.asarray(dipoles))


def run_arm(arm: str, seed: int, traj, pool, args, reference) -> list[dict]:
    from mdplugin.active.spectral import spectral_order, window_band

    window = tuple(args.window)
    rng = np.random.default_rng(seed)
    init = rng.choice(len(pool), args.n_initial, replace=False)
    frames = [pool.frames[i] for i in init]
    dipoles = [pool.dipole[i] for i in init]
    picked: list[int] = []
    allowed = np.ones(len(traj), bool)
    curve = []
    std_all = np.std(traj.dipole - traj.dipole.mean(axis=0))
    while True:
        model = fit(frames + [traj.frames[i] for i in picked], dipoles + [traj.dipole[i] for i in picked])
        point = {"calls": len(picked)}
        if arm == "band":
            mean, draws = model.sample_predictions(traj.frames, args.samples, seed=seed * 1000 + len(picked),
                                                   return_mean=True)
            point["band"] = window_band(draws, DT_FRAME, window)
        elif arm == "std":
            mean, std = model.predict(traj.frames, return_std=True)
        else:
            mean = model.predict(traj.frames)
        mean = np.asarray(mean)
        shape, intensity = spectrum_errors(mean, reference, window)
        point["spectrum_pct"], point["intensity_pct"] = 100 * shape, 100 * intensity
        point["frame_pct"] = float(100 * np.sqrt(np.mean(np.sum((mean - traj.dipole) ** 2, axis=1) / 3)) / std_all)
        curve.append(point)
        if len(picked) >= args.max_calls:
            return curve
        n = min(args.batch, args.max_calls - len(picked))
        if arm == "band":
            new = spectral_order(mean, draws, DT_FRAME, window, n, allowed=allowed)
        elif arm == "std":
            score = np.linalg.norm(np.asarray(std), axis=1)
            new = []
            for _ in range(n):
                s = np.where(allowed, score, -np.inf)
                for p in picked + new:
                    s[max(p - 10, 0): p + 11] = -np.inf
                new.append(int(np.argmax(s)))
        else:
            new = [int(i) for i in rng.choice(np.flatnonzero(allowed), n, replace=False)]
        for i in new:
            allowed[i] = False
        picked += new


def first_at(curve: list[dict], key: str, goal: float):
    """The calls after which the error stays at or below ``goal`` to the end of the curve (the
    error of one model fluctuates from label to label; ``None``: not at the last point)."""
    if curve[-1][key] > goal:
        return None
    i = len(curve) - 1
    while i > 0 and curve[i - 1][key] <= goal:
        i -= 1
    return curve[i]["calls"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-spectrum-output")
    ap.add_argument("--seeds", default="0-9", help="a range A-B or a comma-separated list")
    ap.add_argument("--arms", default="band,random", help="band, std, random")
    ap.add_argument("--window", type=float, nargs=2, default=(600.0, 800.0), metavar=("LOW", "HIGH"))
    ap.add_argument("--n-initial", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--max-calls", type=int, default=24)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--spectrum-goal", type=float, default=5.0, help="spectrum error goal, %% of the window's intensity")
    ap.add_argument("--intensity-goal", type=float, default=2.0,
                    help="goal of the window's integrated intensity error, %% (what the band measures)")
    ap.add_argument("--frame-goal", type=float, default=5.0, help="frame error goal, %% of the dipoles' std")
    ap.add_argument("--summarise", action="store_true", help="only print the table of OUT/bench_active_spectrum.json")
    ap.add_argument("--merge", nargs="*", default=[], help="more result files (other processes' OUT) for the table")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_active_spectrum.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if "-" in args.seeds:
        a, b = (int(x) for x in args.seeds.split("-"))
        seeds = list(range(a, b + 1))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    if not args.summarise:
        traj, pool = data(out)
        reference = ir(traj.dipole)
        for seed in seeds:
            for arm in arms:
                key = f"{arm}/{seed}"
                if key in results:
                    continue
                t0 = time.perf_counter()
                curve = run_arm(arm, seed, traj, pool, args, reference)
                results[key] = curve
                path.write_text(json.dumps(results, indent=1))
                last = curve[-1]
                print(f"{arm:6s} seed {seed}: spectrum error {curve[0]['spectrum_pct']:.1f} -> {last['spectrum_pct']:.1f} %, "
                      f"frame error {curve[0]['frame_pct']:.1f} -> {last['frame_pct']:.1f} % after {last['calls']} calls "
                      f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    merged = dict(results)
    for extra in args.merge:
        merged.update(json.loads(Path(extra).read_text()))
    summarise(merged, arms, seeds, args)


def summarise(results: dict, arms: list[str], seeds: list[int], args) -> None:
    print(f"oracle calls after which the error stays at or below its goal (spectrum error <= {args.spectrum_goal:g} % "
          f"in {args.window[0]:g}-{args.window[1]:g} cm^-1; intensity error <= {args.intensity_goal:g} %; frame error <= "
          f"{args.frame_goal:g} %), seeds "
          f"{seeds[0]}-{seeds[-1]}; '>N': not at {args.max_calls} calls")
    med = {}
    for key, goal in (("spectrum_pct", args.spectrum_goal), ("intensity_pct", args.intensity_goal),
                      ("frame_pct", args.frame_goal)):
        for arm in arms:
            curves = [results[f"{arm}/{s}"] for s in seeds if f"{arm}/{s}" in results]
            curves = [c for c in curves if key in c[0]]
            if not curves:
                continue
            calls = [first_at(c, key, goal) for c in curves]
            vals = sorted(c if c is not None else args.max_calls + args.batch for c in calls)
            med[(key, arm)] = float(np.median(vals))
            text = " / ".join(str(c) if c is not None else f">{args.max_calls}" for c in calls)
            mean_curve = np.mean([[p[key] for p in c] for c in curves], axis=0)
            print(f"  {key:12s} {arm:6s}: {text}; median {med[(key, arm)]:g}; mean error per round "
                  + " ".join(f"{v:.1f}" for v in mean_curve))
        for arm in arms:
            if arm != "random" and (key, "random") in med and (key, arm) in med:
                print(f"  {key:12s} random / {arm}: {med[(key, 'random')] / med[(key, arm)]:.2f}x (medians)")
    bands = [results[f"band/{s}"] for s in seeds if f"band/{s}" in results]
    if bands:
        print("  relative model band of 'band' per round (mean over seeds): "
              + " ".join(f"{v:.3f}" for v in np.mean([[p["band"] for p in c] for c in bands], axis=0)))


if __name__ == "__main__":
    main()
