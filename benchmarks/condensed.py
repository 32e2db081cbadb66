#!/usr/bin/env python
"""Liquid water in periodic boxes: the cost of an MD step and of training, on one core.

What it measures (everything with ``OMP_NUM_THREADS=1``):

* **The MD step** on boxes of 96, 768, 1536 and 12288 atoms (the 96-atom TIP3P box of
  ``/work/shared/data/water-box`` replicated and perturbed): energy, forces, stress, dipole and
  polarizability from :class:`mdplugin.engines.ase.MLCalculator` with the default models (``soap``
  energy trained on TIP3P energies and forces; ``lsoap`` dipole and polarizability trained on a
  point-charge dipole and an additive molecular polarizability), in µs per atom and step, against
  featomic's ``SphericalExpansion`` with position gradients on the same box and hypers in the same
  process (alternating, so that a busy machine slows both alike): the ratio is the figure of merit.
  Each size runs in its own process; its peak memory (``VmHWM``) is read after the ML steps and
  before featomic runs. The step's parts (expansion, energy model, dipole, polarizability) are timed
  on their own too.
* **Training** the dipole and the polarizability models on ``--n-train-tensor`` boxes of 96 atoms
  (default 1000), each in its own process: wall time and peak memory.

Labels are cheap stand-ins (the accuracy is another benchmark's business): ASE's TIP3P for energies
and forces, ``μ = Σ q_i r_i`` with TIP3P charges on whole molecules, and ``α = Σ_molecules
(a·1 + b·(û ûᵀ − 1/3))`` with ``û`` along each molecule's H–O–H bisector.

Run::

    python benchmarks/condensed.py [--sizes 96,768,1536,12288] [--models DIR] [--plot docs/condensed_scaling.png]
                                   [--n-train-energy 100] [--n-train-tensor 1000] [--no-training]
    python benchmarks/condensed.py --no-training --sizes 1536 --profile 10   # + the step's top functions
    python benchmarks/condensed.py --long-range 1536     # the LODE part of a step against the local part
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WATER = REPO.parent / "shared" / "data" / "water-box" / "water32_tip3p_300K.xyz"
if not WATER.exists():
    WATER = Path("/work/shared/data/water-box/water32_tip3p_300K.xyz")
REPEATS = {96: (1, 1, 1), 768: (2, 2, 2), 1536: (2, 2, 4), 12288: (4, 4, 8)}
CHARGES = {8: -0.834, 1: 0.417}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def perturbed_box(repeat: tuple, seed: int, rigid: float = 0.1, noise: float = 0.03):
    """The water box replicated ``repeat`` times; every molecule moved rigidly (translation and
    rotation of ``rigid`` Å / rad scale) and every atom by ``noise`` Å. Molecules stay whole (the
    O is followed by its two H in the file), so the point-charge dipole is well defined."""
    from ase.io import read
    from scipy.spatial.transform import Rotation

    atoms = read(WATER, 0).repeat(repeat)
    rng = np.random.default_rng(seed)
    pos = atoms.positions.reshape(-1, 3, 3)
    centre = pos.mean(axis=1, keepdims=True)
    rot = Rotation.from_rotvec(rng.normal(scale=rigid, size=(len(pos), 3))).as_matrix()
    pos = np.einsum("mab,mkb->mka", rot, pos - centre) + centre + rng.normal(scale=rigid, size=(len(pos), 1, 3))
    atoms.positions = pos.reshape(-1, 3) + rng.normal(scale=noise, size=(len(atoms), 3))
    atoms.info.clear()
    return atoms


def tensor_labels(atoms) -> tuple[np.ndarray, np.ndarray]:
    """Point-charge dipole (3,) e·Å and additive molecular polarizability (3, 3) Å³."""
    q = np.array([CHARGES[int(z)] for z in atoms.numbers])
    dipole = q @ atoms.positions
    pos = atoms.positions.reshape(-1, 3, 3)  # O, H, H per molecule
    bisector = pos[:, 1] + pos[:, 2] - 2 * pos[:, 0]
    u = bisector / np.linalg.norm(bisector, axis=1, keepdims=True)
    alpha = 1.45 * len(pos) * np.eye(3) + 0.3 * (np.einsum("ma,mb->ab", u, u) - len(pos) / 3 * np.eye(3))
    return dipole, alpha


def energy_labels(atoms) -> tuple[float, np.ndarray]:
    from ase.calculators.tip3p import TIP3P

    atoms.calc = TIP3P(rc=4.5)
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = None
    return e, f


def training_frames(n: int, seed: int) -> list:
    return [perturbed_box((1, 1, 1), seed * 100000 + k) for k in range(n)]


def train_models(folder: Path, n_energy: int, n_tensor: int) -> dict:
    """Train (or load from ``folder``) the default energy, dipole and polarizability models."""
    from mdplugin.models import build, load_model

    folder.mkdir(parents=True, exist_ok=True)
    paths = {t: folder / f"{t}.npz" for t in ("energy", "dipole", "polarizability")}
    if all(p.exists() for p in paths.values()):
        return {t: load_model(p) for t, p in paths.items()}
    models = {}
    frames = training_frames(n_energy, seed=1)
    labels = [energy_labels(a) for a in frames]
    t0 = time.perf_counter()
    models["energy"] = build("soap", target="energy").fit(
        frames, {"energy": np.array([e for e, _ in labels]), "forces": [f for _, f in labels]})
    print(f"trained the energy model on {n_energy} boxes in {time.perf_counter() - t0:.0f} s", flush=True)
    frames = training_frames(n_tensor, seed=2)
    labels = [tensor_labels(a) for a in frames]
    for target, k in (("dipole", 0), ("polarizability", 1)):
        t0 = time.perf_counter()
        models[target] = build("lsoap", target=target).fit(frames, np.array([lab[k] for lab in labels]))
        print(f"trained the {target} model on {n_tensor} boxes in {time.perf_counter() - t0:.0f} s", flush=True)
    for target, model in models.items():
        model.save(paths[target])
    return models


# ------------------------------------------------------------------------------------------------
# child processes
# ------------------------------------------------------------------------------------------------
def profile_steps(step, n: int, top: int = 12) -> list[tuple[str, float]]:
    """``top`` functions by own CPU time over ``n`` calls of ``step`` (cProfile with
    ``time.process_time``): ``(name, CPU ms per step)``. The compiled kernels appear under their
    own names (numba dispatchers are called from Python)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(n):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    rows = sorted(((f"{Path(fn).name}:{line}({name})", 1e3 * own / n) for (fn, line, name), (_, _, own, _, _)
                   in stats.items()), key=lambda row: -row[1])
    return rows[:top]


def child_step(folder: Path, n_atoms: int, steps: int, rounds: int, profile: int = 0) -> dict:
    """One size: the ML step (µs/atom), its parts, its peak memory, and featomic's expansion with
    position gradients on the same box and hypers, alternating; with ``profile`` > 0, the step's
    top functions by CPU time over that many more steps (:func:`profile_steps`)."""
    from mdplugin.engines.ase import MLCalculator
    from mdplugin.features.cache import FeatureCache
    from mdplugin.models import load_model

    models = {t: load_model(folder / f"{t}.npz") for t in ("energy", "dipole", "polarizability")}
    atoms = perturbed_box(REPEATS[n_atoms], seed=7)
    calc = MLCalculator(**models)
    atoms.calc = calc
    rng = np.random.default_rng(0)

    def step(with_std: bool = False):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        for name in ("dipole", "polarizability"):
            calc.get_property(name, atoms)
            if with_std:
                calc.get_property(f"{name}_std", atoms)
        if with_std:
            calc.get_property("energy_std", atoms)

    def timed(function, n):
        """CPU seconds (time.process_time) of ``n`` calls: the machine is shared, and CPU time
        counts only this process's work (one thread)."""
        out = []
        for _ in range(n):
            t0 = time.process_time()
            function()
            out.append(time.process_time() - t0)
        return out

    timed(step, 2)  # warm up
    before = os.times()
    ml = timed(step, steps)
    after = os.times()  # user and system CPU time apart: fresh memory from the kernel counts as system time
    user, system = (after.user - before.user) / steps, (after.system - before.system) / steps
    peak = peak_rss_mb()
    groups = [members for _, members in calc.feature_groups]
    # the parts, on the current structure
    parts = {}
    for featurizer, members in calc.feature_groups:
        gradients = "energy" in members
        t = timed(lambda: featurizer.compute([atoms], gradients=gradients), max(2, steps // 2))
        parts[f"expansion {'+'.join(members)}"] = min(t)
        expansion = featurizer.compute([atoms], gradients=gradients)
        for slot in members:
            model = models[slot]
            # every model pays its own λ-SOAP features here (in the step the first one of a group does)
            t = timed(lambda: model.predict_from_features(FeatureCache(expansion), forces=slot == "energy",
                                                          precision="single"), max(2, steps // 2))
            parts[f"{slot} model"] = min(t)
    # featomic's expansion with position gradients, the energy model's hypers, alternating with the step
    reference = models["energy"].featurizer()
    import featomic

    featomic_calc = featomic.SphericalExpansion(**reference.hypers())
    featomic_calc.compute(atoms, gradients=["positions"])
    ref, ml2 = [], []
    for _ in range(rounds):
        ref += timed(lambda: featomic_calc.compute(atoms, gradients=["positions"]), 1)
        ml2 += timed(step, max(1, steps // rounds))
    ml_all = ml + ml2
    # the step with the uncertainties of all three models (energy_std, dipole_std, polarizability_std)
    with_std = timed(lambda: step(with_std=True), max(2, steps // 2))
    profiled = profile_steps(step, profile) if profile else []
    return {
        "profile_ms": profiled,
        "n_atoms": n_atoms, "groups": groups,
        "step_us_per_atom": 1e6 * float(np.median(ml_all)) / n_atoms,
        "step_best_us_per_atom": 1e6 * float(np.min(ml_all)) / n_atoms,
        "featomic_us_per_atom": 1e6 * float(np.median(ref)) / n_atoms,
        "ratio_median": float(np.median(ml_all) / np.median(ref)),
        "ratio_same_rounds": float(np.median(ml2) / np.median(ref)),
        "step_with_std_us_per_atom": 1e6 * float(np.median(with_std)) / n_atoms,
        "step_user_us_per_atom": 1e6 * user / n_atoms,
        "step_system_us_per_atom": 1e6 * system / n_atoms,
        "peak_rss_mb": peak,
        "parts_ms": {k: 1e3 * v for k, v in parts.items()},
        "load": os.getloadavg()[0],
    }


def child_train(target: str, n_boxes: int) -> dict:
    """Train the default λ-SOAP ``target`` model on ``n_boxes`` boxes: wall time and peak memory."""
    from mdplugin.models import build

    frames = training_frames(n_boxes, seed=3)
    y = np.array([tensor_labels(a)[0 if target == "dipole" else 1] for a in frames])
    before = peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    build("lsoap", target=target).fit(frames, y)
    return {"target": target, "n_boxes": n_boxes, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "peak_rss_mb": peak_rss_mb(), "rss_before_fit_mb": before, "load": os.getloadavg()[0]}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot(results: list, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_atoms"] for r in results]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(n, [r["step_us_per_atom"] for r in results], "o-", label="mdplugin MD step (E, F, σ, μ, α)")
    ax.plot(n, [r["featomic_us_per_atom"] for r in results], "s--",
            label="featomic SphericalExpansion\nwith position gradients alone")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms in the box")
    ax.set_ylabel("CPU µs per atom and step (one core)")
    ax.set_title(f"liquid water, periodic boxes ({label})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


#: (smearing Å, lode_max_radial, k-cut-off Å⁻¹ or None for featomic's 1.2π/smearing) of the long-range rows
LODE_SETTINGS = ((1.0, 2, None), (2.0, 2, None), (3.0, 2, None), (4.0, 2, None),
                 (2.0, 1, None), (2.0, 4, None), (2.0, 2, float(np.pi / 2.0)), (3.0, 4, None),
                 (3.0, 2, float(0.3 * np.pi)), (5.0, 2, None))


def long_range_row(n_atoms: int, settings=LODE_SETTINGS, rounds: int = 3) -> list[dict]:
    """The long-range part of a step against the local part, on one box (same process, alternating,
    best of ``rounds``): local = the expansion with position gradients + its λ = 0, 1, 2 λ-SOAP (what
    the local energy, dipole and polarizability models of a step are computed from); long range =
    featomic's LodeSphericalExpansion (Ewald, values only) + the local ⊗ potential Clebsch–Gordan
    products (:mod:`mdplugin.features.lode`), per setting (smearing Å, lode_max_radial, k-cut-off;
    featomic's default k-cut-off is 1.2π/smearing, so the k-space cost falls as smearing⁻³)."""
    from mdplugin.features.expansion import SphericalExpansion
    from mdplugin.features.lambda_soap import lambda_soap
    from mdplugin.features.lode import couple, periodic_lode

    box = perturbed_box(REPEATS[n_atoms], seed=7)
    expansion = SphericalExpansion([1, 8], max_angular=2)
    expansion.compute([box], gradients=True)  # compile, neighbour list

    def local():
        exp = expansion.compute([box], gradients=True)
        lambda_soap(exp, (0, 1, 2))
        return exp

    out = []
    for smearing, max_radial, k_cutoff in settings:
        t_local, t_long = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            exp = local()
            t1 = time.perf_counter()
            pot = periodic_lode([box], [1, 8], 2, max_radial, 4.0, smearing, k_cutoff)
            for lam in (0, 1, 2):
                couple([np.asarray(v) for v in exp.values], pot, lam)
            t2 = time.perf_counter()
            t_local.append(t1 - t0)
            t_long.append(t2 - t1)
        out.append({"n_atoms": len(box), "smearing": smearing, "max_radial": max_radial,
                    "k_cutoff": 1.2 * np.pi / smearing if k_cutoff is None else k_cutoff,
                    "local_s": min(t_local), "long_range_s": min(t_long),
                    "ratio": min(t_long) / min(t_local), "load": os.getloadavg()[0]})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="96,768,1536,12288")
    p.add_argument("--models", type=Path, default=Path("/tmp/mdplugin-condensed-models"),
                   help="folder of the trained models (reused when present)")
    p.add_argument("--n-train-energy", type=int, default=100)
    p.add_argument("--n-train-tensor", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10, help="ML steps per size (fewer at 12288 atoms)")
    p.add_argument("--rounds", type=int, default=3, help="featomic calls per size")
    p.add_argument("--no-training", dest="training", action="store_false", help="skip the training benchmark")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="also print each size's top functions by CPU time over this many profiled steps")
    p.add_argument("--plot", type=Path, help="write the scaling plot here")
    p.add_argument("--long-range", type=int, metavar="N_ATOMS",
                   help="only the long-range row: the LODE part of a step against the local part on this box size")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.long_range:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        print(f"commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'atoms':>6}{'smearing Å':>11}{'n_max':>6}{'k_cut Å⁻¹':>10}{'local s':>9}{'long-range s':>13}{'ratio':>7}")
        for r in long_range_row(args.long_range):
            print(f"{r['n_atoms']:>6}{r['smearing']:>11.1f}{r['max_radial']:>6}{r['k_cutoff']:>10.2f}"
                  f"{r['local_s']:>9.2f}{r['long_range_s']:>13.2f}"
                  f"{r['ratio']:>7.2f}  (load {r['load']:.1f})", flush=True)
        return

    if args.child:
        kind, *rest = args.child
        if kind == "step":
            result = child_step(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))
        else:
            result = child_train(rest[0], int(rest[1]))
        print(json.dumps(result))
        return

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}, {time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    train_models(args.models, args.n_train_energy, min(args.n_train_tensor, 200))
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    print("CPU time (time.process_time, one thread) per step; medians")
    print(f"{'atoms':>6}{'step µs/atom':>14}{'(user+system)':>15}{'featomic µs/atom':>18}{'ratio':>8}{'with *_std':>12}"
          f"{'peak MB':>9}  parts (CPU ms, best)")
    for n in sizes:
        steps = args.steps if n <= 1536 else max(3, args.steps // 3)
        r = run_child("step", str(args.models), str(n), str(steps), str(args.rounds), str(args.profile))
        results.append(r)
        parts = ", ".join(f"{k} {v:.0f}" for k, v in r["parts_ms"].items())
        split = f"{r['step_user_us_per_atom']:.0f}+{r['step_system_us_per_atom']:.0f}"
        print(f"{n:>6}{r['step_us_per_atom']:>14.1f}{split:>15}{r['featomic_us_per_atom']:>18.1f}{r['ratio_median']:>8.3f}"
              f"{r['step_with_std_us_per_atom']:>12.1f}{r['peak_rss_mb']:>9.0f}  {parts}  (load {r['load']:.1f})", flush=True)
        for name, ms in r["profile_ms"]:
            print(f"{'':>8}{ms:8.2f} CPU ms per step  {name}")
    if len(results) > 1:
        print(f"per-atom cost at {results[-1]['n_atoms']} / at {results[0]['n_atoms']} atoms: "
              f"{results[-1]['step_us_per_atom'] / results[0]['step_us_per_atom']:.2f}")
    print(f"shared expansions: {results[0]['groups']}")
    if args.training:
        for target in ("dipole", "polarizability"):
            r = run_child("train", target, str(args.n_train_tensor))
            print(f"training {target} on {r['n_boxes']} boxes of 96 atoms: {r['seconds']:.0f} s wall, "
                  f"{r['cpu_seconds']:.0f} s CPU, peak "
                  f"{r['peak_rss_mb']:.0f} MB (load {r['load']:.1f})", flush=True)
    (args.models / "step_results.json").write_text(json.dumps(results, indent=1))
    if args.plot:
        loads = [r["load"] for r in results]
        plot(results, args.plot, f"commit {commit}, {time.strftime('%Y-%m-%d')}, load {min(loads):.0f}–{max(loads):.0f} on 2 cores")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
