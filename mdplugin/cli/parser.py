"""``mdplugin <command>``: the command line (see ``mdplugin --help`` and docs/cli.md).

Each handler is thin: it parses options and calls the public function of the module that owns the
work. Every :class:`~mdplugin.core.errors.MdpluginError` (and any other failure) ends in one line on
stderr and a non-zero exit status; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

from ..core.version import __version__
from ..core.errors import ConfigError, MdpluginError
from .options import json_object
from ..core.precision import TENSOR_PRECISIONS

#: --model name on the command line -> registry name
MODEL_CHOICES = ("soap", "lsoap", "rpr", "hamiltonian", "lode")
TARGET_CHOICES = ("energy", "dipole", "polarizability", "hamiltonian")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _key_map(args) -> dict[str, str]:
    keys = {}
    for name in ("energy", "forces", "dipole", "polarizability"):
        value = getattr(args, f"{name}_key", None)
        if value:
            keys[name] = value
    return keys


def _properties_for(target: str) -> list[str] | None:
    """Labels a model of ``target`` trains on (None: whichever the file has; the Hamiltonians are
    read from the .hamiltonian.npz file beside it)."""
    return ["energy", "forces"] if target == "energy" else None if target == "hamiltonian" else [target]


def _read_data(path: str, target: str, args):
    from ..structures.data import read_dataset

    data = read_dataset(path, properties=_properties_for(target), keys=_key_map(args), units=args.units)
    if target == "hamiltonian":
        from ..structures.hamiltonians import attach_hamiltonians

        attach_hamiltonians(data)
    return data


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data keys and units")
    for name in ("energy", "forces", "dipole", "polarizability"):
        g.add_argument(f"--{name}-key", metavar="K", help=f"key of the {name} in the data file (default: {name})")
    g.add_argument("--units", choices=("ase", "atomic"), default="ase",
                   help="units of the labels in the file: ase (eV, eV/Å, e·Å, Å³; default) or atomic "
                        "(Hartree, Hartree/bohr, e·bohr, bohr³)")


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------
def cmd_label(args) -> int:
    from ..oracles.label import label_file

    props = [p.strip() for p in args.properties.split(",") if p.strip()]
    oracle = args.oracle
    pyscf_options = {k: v for k, v in (("basis", args.basis), ("xc", args.xc)) if v}
    if args.cluster_radius is not None:
        from ..oracles.label import make_oracle, ORACLES

        name, _, method = oracle.partition(":")
        if name not in ORACLES:
            raise ConfigError("--cluster-radius applies to the built-in oracles (tblite, pyscf)")
        options = dict(pyscf_options) if name == "pyscf" else {}
        if method:
            options["method"] = method
        oracle = make_oracle(name, cluster_radius=args.cluster_radius, **options)
        pyscf_options = {}
    label_file(args.input, args.output, oracle=oracle, properties=props, progress=not args.quiet,
               pyscf_options=pyscf_options, minimal_basis=args.minimal_basis)
    return 0


def cmd_train(args) -> int:
    from ..models import build
    from ..models.training import fit_on_dataset, select_training

    hypers = json_object(args.hypers, "--hypers")
    model = build(args.model, target=args.target, **hypers)  # a model that cannot learn the target: before reading
    data = _read_data(args.data, args.target, args)
    data = select_training(data, args.n_train, seed=args.seed)
    from ..learn.parallel import get_comm

    comm = get_comm()  # under `mpiexec -n P`: the ranks share the fit, rank 0 writes the model
    t0 = time.perf_counter()
    fit_on_dataset(model, data, comm=comm)
    elapsed = time.perf_counter() - t0
    if comm.rank == 0:
        model.save(args.output)
        ranks = f" on {comm.size} MPI ranks" if comm.size > 1 else ""
        print(f"trained {args.model} {args.target} model on {len(data)} frames{ranks} in {elapsed:.1f} s "
              f"-> {args.output}")
    return 0


def cmd_evaluate(args) -> int:
    from ..models import load_model
    from ..models.training import evaluate_model, metrics_in_units

    model = load_model(args.model)
    data = _read_data(args.data, model.target, args)
    # the errors in the units the labels were read in (--units), and the JSON says which
    result = metrics_in_units(evaluate_model(model, data), args.units)
    if not args.json:
        units = result["units"]
        for key, value in result.items():
            if key == "units":
                continue
            suffix = " %" if key.endswith("percent_of_std") else f" {units[key]}" if key in units else ""
            print(f"{key:>28}: {value:.6g}{suffix}" if isinstance(value, float) else f"{key:>28}: {value}")
    else:
        print(json.dumps(result))
    return 0


def cmd_predict(args) -> int:
    from ..structures.data import read_dataset
    from ..models import load_model
    from ..models.training import predict_dataset
    from ..structures.data import write_dataset

    from ..models.training import comparison

    model = load_model(args.model)
    try:  # the labels the file has are kept beside the predictions (as <name>_reference for the target's)
        data = read_dataset(args.data)
    except MdpluginError:  # labels on some frames only: structures alone
        data = read_dataset(args.data, properties=[])
    predicted = predict_dataset(model, data)
    if predicted.hamiltonian is not None:  # the predicted matrices beside the output
        from ..structures.hamiltonians import hamiltonian_path, write_hamiltonians

        write_hamiltonians(hamiltonian_path(args.output), predicted.hamiltonian)
    write_dataset(args.output, predicted)
    extra = f" (matrices -> {hamiltonian_path(args.output)})" if predicted.hamiltonian is not None else ""
    print(f"wrote {model.target} predictions for {len(data)} frames -> {args.output}{extra}")
    for name, m in comparison(model, data, predicted).items():
        print(f"  against the file's {name} labels (kept as {name}_reference): RMSE {m['rmse']:.4g}, "
              f"{m['rmse_percent_of_std']:.2f} % of their std")
    return 0


def cmd_md(args) -> int:
    from ..engines.md import run_md_command

    return run_md_command(args) or 0


def _percentile_pair(text: str) -> tuple[float, float]:
    """``LO,HI`` -> (lo, hi) percentiles (checked by the spectrum code)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two percentiles LO,HI such as 5,95, got {text!r}") from None
    return lo, hi


def cmd_spectrum(args) -> int:
    from ..spectra import spectrum_command

    options = {k: v for k, v in vars(args).items()
               if k not in ("kind", "series", "dt", "output", "plot", "temperature", "func", "command", "debug",
                            "threads")}
    result = spectrum_command(args.kind, args.series, dt=args.dt, output=args.output, plot=args.plot,
                              temperature=args.temperature, **options)
    meta = result.meta
    print(f"wrote the {result.summary()} -> {args.output}" + (f", {args.plot}" if args.plot else ""))
    if result.bands:
        print(f"model band: {meta['band'][0]:g}-{meta['band'][1]:g} % of {meta['n_samples']} posterior draws of "
              f"{args.model}; relative width {result.relative_band_width():.3g} (integral of the band over the "
              f"integral of the spectrum)")
    print(f"statistical error: {meta['n_blocks']} blocks of {meta['block'] * meta['dt']:g} fs" if meta["n_blocks"]
          else "statistical error: not estimated (fewer than 3 blocks of twice the depth; --blocks 1 with 3 or "
               "more independent series, a shorter --depth or a longer series give one)")
    if result.line_width > 100:
        print(f"note: bands closer than about {result.line_width:.0f} cm^-1 merge at this correlation depth; "
              f"longer series ({meta['n_frames'] * meta['dt'] / meta['n_series']:g} fs each now) or a larger "
              f"--depth give sharper bands")
    return 0


def cmd_ipi(args) -> int:
    from .ipi import run_ipi_command

    return run_ipi_command(args) or 0


def cmd_ipi_input(args) -> int:
    from .ipi_input import run_ipi_input_command

    return run_ipi_input_command(args)


def cmd_active(args) -> int:
    from .active import run_active_command

    return run_active_command(args) or 0


def cmd_demo(args) -> int:
    from .demo import run_demo_command

    return run_demo_command(args) or 0


# ----------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdplugin",
        description="Machine-learned energies, forces, dipoles and polarizabilities for MD, and IR/Raman spectra.",
    )
    parser.add_argument("--version", action="version", version=f"mdplugin {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--threads", metavar="N",
                        help="BLAS/OpenMP threads of the hot paths: a number, or auto (default: 1 for MD steps "
                             "and labels; for fits the idle cores, shared among the MPI ranks of a node); "
                             "sets MDPLUGIN_THREADS (docs/quickstart.md)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("label", help="label structures with a reference method (GFN2-xTB by default)")
    p.add_argument("input", help="structures to label (extended XYZ or any ASE format)")
    p.add_argument("-o", "--output", required=True, help="labelled extended XYZ to write")
    p.add_argument("--oracle", default="tblite",
                   help="reference method: tblite (GFN2-xTB, default), tblite:GFN1-xTB, pyscf (DFT; the [pyscf] "
                        "extra), or package.module:function returning any ASE calculator (as for mdplugin active)")
    p.add_argument("--properties", default="energy,forces,dipole,polarizability",
                   help="comma-separated labels to compute (default: energy,forces,dipole,polarizability); "
                        "hamiltonian (with --oracle pyscf) writes the AO Fock and overlap matrices to "
                        "OUT.hamiltonian.npz (docs/formats.md)")
    p.add_argument("--cluster-radius", type=float, metavar="R",
                   help="periodic cells: the polarizability is the sum of each molecule's response in the cluster of "
                        "molecules whose centres are within R Å of its own (default 4; docs/condensed.md)")
    p.add_argument("--basis", help="PySCF basis of every label (default: sto-3g with hamiltonian, else aug-cc-pvdz)")
    p.add_argument("--xc", help="PySCF functional, or hf for Hartree-Fock (default pbe0)")
    p.add_argument("--minimal-basis", metavar="BASIS",
                   help="store the Hamiltonian of --basis projected onto this smaller basis (e.g. --basis def2-svp "
                        "--minimal-basis sto-3g): occupied and lowest virtual orbital energies kept exactly")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("train", help="train a model on a labelled data set")
    p.add_argument("data", help="labelled extended XYZ")
    p.add_argument("--target", required=True, choices=TARGET_CHOICES)
    p.add_argument("--model", required=True, choices=MODEL_CHOICES,
                   help="soap: invariant SOAP GPR (energy); lsoap: λ-SOAP SA-GPR; rpr: rotate–predict–rotate; "
                        "lode: local + long-range (LODE) features, charges of charged molecules (docs/long_range.md)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.npz)")
    p.add_argument("--n-train", type=int, metavar="N", help="train on N frames drawn at random (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed for --n-train selection (default 0)")
    p.add_argument("--hypers", metavar="JSON", help="model hyper-parameters as a JSON object")
    _add_data_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="errors of a model on a labelled data set")
    p.add_argument("model", help="model file (.npz)")
    p.add_argument("data", help="labelled extended XYZ")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    _add_data_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="write a model's predictions (and uncertainties) for structures, beside "
                                       "the file's own labels (the predicted property's as <name>_reference)")
    p.add_argument("model", help="model file (.npz)")
    p.add_argument("data", help="structures (extended XYZ)")
    p.add_argument("-o", "--output", required=True, help="extended XYZ to write")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("md", help="molecular dynamics with ML models, recording dipoles and polarizabilities")
    p.add_argument("start", help="starting structure")
    p.add_argument("--energy", required=True, help="energy model file, or 'tblite'")
    p.add_argument("--dipole", help="dipole model file")
    p.add_argument("--polarizability", help="polarizability model file")
    p.add_argument("--steps", type=int, required=True, help="number of MD steps")
    p.add_argument("--dt", type=float, required=True, help="time step, fs")
    p.add_argument("--temperature", type=float, default=300.0, help="temperature, K (default 300)")
    p.add_argument("--thermostat", choices=("langevin", "none"), default="langevin",
                   help="langevin (default) or none (NVE, velocity Verlet)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--interval", type=int, default=1, help="write every N steps (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (velocities, thermostat)")
    p.add_argument("--replicas", action="store_true", help="under mpiexec: one independent replica per rank")
    p.add_argument("--max-uncertainty", type=float, metavar="STD",
                   help="stop with a clear error when a model's predicted standard deviation (energy_std eV, "
                        "dipole_std e·Å, polarizability_std Å³) exceeds STD on a frame that records it")
    p.add_argument("--runaway", choices=("stop", "warn", "off"), default="stop",
                   help="when the dynamics run away (mean temperature of the last 100 fs over twice --temperature, "
                        "or a recorded uncertainty over 10x its value at the start): stop with an error after "
                        "writing the frame (default), warn once and go on, or off")
    p.add_argument("--std-every", type=int, default=10, metavar="N",
                   help="record the models' uncertainties (*_std) on every N-th written frame, the first "
                        "included (default 10; 1: every frame, 0: never). An uncertainty costs about as much "
                        "as 25 MD steps with the default λ-SOAP models")
    p.add_argument("--tensor-precision", choices=tuple(TENSOR_PRECISIONS), default="single",
                   help="precision of the λ-SOAP dipole/polarizability models' large products (default single: "
                        "≈ 0.9 ms faster per step on DCE, ~1e-6 relative change; energies and forces are always double)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", required=True, help="trajectory to write (extended XYZ)")
    p.set_defaults(func=cmd_md)

    p = sub.add_parser("spectrum", help="IR or Raman spectrum from dipole or polarizability time series")
    p.add_argument("kind", choices=("ir", "raman"))
    p.add_argument("series", nargs="+", help="trajectories (extxyz), i-PI extras files, or .npy/.txt arrays")
    p.add_argument("--dt", type=float, required=True, help="time between stored frames, fs")
    p.add_argument("--temperature", type=float,
                   help="temperature of the trajectory, K (required for ir and raman: absolute intensities "
                        "scale with 1/(k_B T); it also sets the quantum correction)")
    p.add_argument("-o", "--output", required=True, help="CSV to write")
    p.add_argument("--plot", help="PNG to write")
    p.add_argument("--depth", type=float, help="correlation depth, fs (default: 1/6 of the shortest series, at most 2000)")
    p.add_argument("--window", default="hann",
                   help="lag window: hann (default), none, or any window scipy.signal.get_window knows (hamming, "
                        "blackman, bartlett, ...; with parameters as name:p, e.g. tukey:0.5, kaiser:8)")
    p.add_argument("--form", choices=("derivative", "omega2"), default="derivative",
                   help="finite-difference derivative with sinc correction (default) or omega^2-weighted series")
    p.add_argument("--correction", choices=("none", "harmonic", "standard", "schofield"), default="harmonic",
                   help="quantum correction factor (default harmonic: the classical formula)")
    p.add_argument("--pad", type=int, default=4, help="zero padding of the correlation function, factor (default 4)")
    p.add_argument("--block", type=float,
                   help="block length for the statistical error bars, fs (default 2 x depth; the *_stat_err "
                        "columns are left out when that gives fewer than 3 blocks)")
    p.add_argument("--blocks", type=int,
                   help="instead of --block: cut every series into N equal blocks (1: each series is a block, "
                        "for independent replicas); at least 3 blocks in all, each at least 2 x depth")
    p.add_argument("--max-wavenumber", type=float, help="last wavenumber written, cm^-1 (default Nyquist)")
    p.add_argument("--laser", type=float, help="Raman: excitation wavenumber, cm^-1, adds ((nu_L - nu)/nu_L)^4")
    p.add_argument("--bose", action="store_true", help="Raman: multiply by the Bose factor n(nu) + 1")
    p.add_argument("--key", help="name of the dipole/polarizability in the files (default dipole / polarizability)")
    p.add_argument("--units", choices=("ase", "atomic"), default="ase",
                   help="units of XYZ and array series: ase (e*A, A^3, default) or atomic (e*bohr, bohr^3)")
    p.add_argument("--cell-dipole", choices=("total", "polarization"),
                   help="IR of a periodic trajectory whose cell changes (NPT): use the cell's dipole as stored (total) "
                        "or scaled to the mean volume, M*<V>/V (polarization); required only then (docs/condensed.md)")
    p.add_argument("--centroid", type=int, metavar="P",
                   help="the SERIES are the per-bead files of path-integral runs of P beads (i-PI's <name>_<bead> "
                        "extras, P consecutive files per run): the spectrum of their bead average at every step, the "
                        "centroid (TRPMD/RPMD; docs/condensed.md)")
    p.add_argument("--model", metavar="MODEL.npz",
                   help="dipole model (ir) or polarizability model (raman) to evaluate on the structures of the "
                        "SERIES trajectories instead of reading stored values")
    p.add_argument("--uncertainty", action="store_true",
                   help="add the model band: spectra of --samples posterior draws of --model, correlated along "
                        "the trajectories (CSV columns <name>_model_p<lo>/_p<hi>, shaded in the plot)")
    p.add_argument("--samples", type=int, default=64, help="posterior draws for --uncertainty (default 64)")
    p.add_argument("--band", type=_percentile_pair, default=(5.0, 95.0), metavar="LO,HI",
                   help="percentiles of the model band, %% (default 5,95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draws (default 0)")
    p.set_defaults(func=cmd_spectrum)

    p = sub.add_parser("ipi", help="serve ML energies, forces, dipoles, polarizabilities to an i-PI server")
    p.add_argument("--template", required=True, help="structure file giving the atom types")
    p.add_argument("--energy", help="energy model file, or 'tblite' (not with --active)")
    p.add_argument("--active", metavar="RUN_DIR",
                   help="learn on the fly with the models of an `mdplugin active` run folder: structures "
                        "whose uncertainty is over the run's thresholds are labelled by its oracle into "
                        "RUN_DIR/data.xyz and the models retrained (see docs/active.md)")
    p.add_argument("--dipole", help="dipole model file")
    p.add_argument("--polarizability", help="polarizability model file")
    p.add_argument("--unix", action="store_true", help="connect through a UNIX socket")
    p.add_argument("--address", required=True, help="host name, or the UNIX socket name with --unix")
    p.add_argument("--port", type=int, help="TCP port (not with --unix)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server (default 60)")
    p.add_argument("--sockets-prefix", default="/tmp/ipi_",
                   help="with --unix: prefix of the socket file, as i-PI's <simulation sockets_prefix> "
                        "(default /tmp/ipi_)")
    p.add_argument("--shm", action="store_true",
                   help="exchange positions/forces through shared memory (i-PI mode='shm'; implies --unix)")
    p.add_argument("--no-std", dest="std", action="store_false",
                   help="do not compute or send the models' uncertainties (*_std extras)")
    p.add_argument("--std-every", type=int, default=10, metavar="N",
                   help="compute the *_std extras with every N-th structure, the first included, and send NaN "
                        "for them on the others (default 10, the stride of the *_std outputs of examples/ipi: "
                        "set it to the stride of yours; 1: every structure, as path-integral runs that write "
                        "them need). An uncertainty costs about 25 times the values; i-PI reads it only on the "
                        "steps it writes")
    p.add_argument("--verbose", action="store_true", help="print every message of the i-PI protocol")
    p.set_defaults(func=cmd_ipi)

    p = sub.add_parser("ipi-input", help="write an i-PI input (input.xml) for a run served by `mdplugin ipi`",
                       description="Write an i-PI input: MD of START (NVE, NVT, TRPMD or NPT) with forces from an "
                                   "<ffsocket> that `mdplugin ipi` serves, dipoles and polarizabilities written "
                                   "every step per bead (docs/ipi.md, Writing the i-PI input).")
    p.add_argument("start", help="start structure (any file ASE reads; Å, with its cell)")
    p.add_argument("-o", "--output", default="input.xml", help="the input file to write (default input.xml)")
    p.add_argument("--ensemble", choices=["nve", "nvt", "trpmd", "npt"], default="nvt",
                   help="nvt: SVR (one bead) or PILE-L thermostat, 100 fs; trpmd: PILE-G, 1000 fs on the "
                        "centroid, λ = 0.5 (needs --beads > 1); npt: isotropic barostat, Langevin (needs --pbc) "
                        "(default nvt)")
    p.add_argument("--steps", type=int, required=True, help="MD steps")
    p.add_argument("--dt", type=float, default=0.5, help="time step, fs (default 0.5)")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--beads", type=int, default=1, help="path-integral beads (default 1)")
    p.add_argument("--pressure", type=float, default=0.0, help="with --ensemble npt: GPa (default 0)")
    p.add_argument("--pbc", action="store_true",
                   help="a periodic system: i-PI wraps the positions it sends into the cell (condensed phase)")
    p.add_argument("--unix", action="store_true", help="a UNIX socket (as `mdplugin ipi --unix`)")
    p.add_argument("--address", required=True, help="host name, or the UNIX socket name with --unix")
    p.add_argument("--port", type=int, help="TCP port (not with --unix)")
    p.add_argument("--sockets-prefix", default="/tmp/ipi_", help="with --unix: prefix of the socket file "
                                                                 "(default /tmp/ipi_)")
    p.add_argument("--extras", default="dipole,polarizability",
                   help="extras i-PI writes every step, one file per bead: a comma-separated list of dipole, "
                        "polarizability, or '' for none (default dipole,polarizability)")
    p.add_argument("--every", type=int, default=10, metavar="N",
                   help="write properties, positions and the extras' uncertainties every N steps (default 10, "
                        "the default of `mdplugin ipi --std-every`)")
    p.add_argument("--no-std", dest="std", action="store_false", help="do not write the uncertainties")
    p.add_argument("--checkpoint", type=int, metavar="N", help="write an i-PI checkpoint every N steps")
    p.add_argument("--prefix", default="sim", help="prefix of i-PI's output files (default sim)")
    p.add_argument("--seed", type=int, default=31415, help="i-PI's random seed (default 31415)")
    p.set_defaults(func=cmd_ipi_input)

    p = sub.add_parser(
        "active", help="active learning: MD, label when unsure, retrain, go on",
        description="Run Langevin MD with ML models from START; at every step compare each model's "
                    "uncertainty with its threshold; above it, label the structure with the oracle, "
                    "append it to RUN_DIR/data.xyz (flushed to disk first), retrain and go on from the "
                    "last trusted state. The run ends at the first budget reached (--steps, "
                    "--max-calls, --wall-time) and can be resumed after any kill with --resume RUN_DIR. "
                    "RUN_DIR holds data.xyz, log.csv, active.png, the models (<target>.npz), "
                    "state.npz and config.json. See docs/active.md.",
        epilog="Molecules with several conformers: one trajectory rarely leaves the basin it starts in "
               "within a few ps, so its structures miss the others. The default run explores (segments "
               "started from the thermally accessible known structure farthest from all earlier starts, every "
               "third one at twice the temperature; --no-explore follows one trajectory; without --steps it "
               "gets 3 x --segment x --max-calls steps, so the call budget ends it). With labelled frames of "
               "every conformer (--initial), short walkers from "
               "them and a repeated temperature ramp cover them too, as in the benchmark of docs/active.md "
               "(more than 2x fewer oracle calls, in the median of ten seeds, than random frames of one "
               "reference trajectory on 1,2-dichloroethane): --segment 100 --sample-every 5 --walkers --pool 200 "
               "--temperature 300:600 --temperature-cycles 10 --stop-factor 20, with low thresholds "
               "(--threshold-energy 0.003 --threshold-dipole 0.006) so that one structure per segment "
               "is labelled until --max-calls.")
    p.add_argument("start", nargs="?", help="starting structure (any file ASE reads; not needed with --resume)")
    p.add_argument("--quiet", action="store_true", help="print only the final summary (and warnings, on stderr)")
    p.add_argument("-o", "--output", metavar="RUN_DIR", help="run folder (created; must not hold a run)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in -o RUN_DIR) from its last checkpoint, keeping "
                        "every label; --steps, --max-calls and --wall-time given here extend its budgets, "
                        "the other settings stay as saved")
    g = p.add_argument_group("oracle and data")
    g.add_argument("--oracle", default=None,
                   help="reference method: tblite (GFN2-xTB, default), tblite:GFN1-xTB, pyscf (DFT; the "
                        "[pyscf] extra), or package.module:function returning any ASE calculator that "
                        "computes the labels of the targets (energy+forces, dipole, polarizability); the "
                        "module is looked up on the Python path, then in the current folder")
    g.add_argument("--initial", metavar="DATA.xyz",
                   help="labelled frames to start from (extended XYZ in ASE units), labelled by the same "
                        "method as --oracle (mixing methods is not detected); default: label "
                        "--n-initial frames of a short reference MD run with the oracle")
    g.add_argument("--n-initial", type=int, default=None,
                   help="frames labelled from the reference run when --initial is not given (default 10)")
    g = p.add_argument_group("models")
    g.add_argument("--targets", default=None,
                   help="comma-separated properties to learn: energy (with forces), dipole, polarizability "
                        "(default all three); without energy the oracle drives the dynamics")
    g.add_argument("--model", choices=("lsoap", "rpr"), default=None,
                   help="dipole/polarizability model: lsoap (λ-SOAP SA-GPR, default) or rpr")
    g.add_argument("--energy-model", choices=("soap",), default=None, help="energy model (soap)")
    for t in ("energy", "dipole", "polarizability"):
        g.add_argument(f"--{t}-hypers", metavar="JSON",
                       help=f"hyper-parameters of the {t} model as a JSON object, e.g. '{{\"n_sparse\": 100}}'")
    g = p.add_argument_group(
        "uncertainty thresholds",
        "A structure is labelled when any target's uncertainty is above its threshold. Measures: energy = "
        "GPR std of the energy per atom (eV/atom); dipole = norm of the std vector (e·Å); polarizability = "
        "Frobenius norm of the std matrix (Å³). A target without an absolute threshold uses "
        "--threshold-factor × the uncertainty its models gave on frames they had not seen: the RMS of the "
        "measure over held-out frames of a 2-fold cross-validation on the labelled data, repeated whenever "
        "the data have grown by a quarter (a structure is labelled when the models are less sure of it "
        "than of unseen frames like their data). A run that ends with 0 oracle calls says so on stderr.")
    g.add_argument("--threshold-energy", type=float, default=None, metavar="EV_PER_ATOM",
                   help="absolute energy threshold, eV/atom")
    g.add_argument("--threshold-dipole", type=float, default=None, metavar="E_ANGSTROM",
                   help="absolute dipole threshold, e·Å")
    g.add_argument("--threshold-polarizability", type=float, default=None, metavar="ANGSTROM3",
                   help="absolute polarizability threshold, Å³")
    g.add_argument("--threshold-factor", type=float, default=None,
                   help="relative threshold: this multiple of the cross-validated uncertainty, for targets without "
                        "an absolute threshold (default 1)")
    g = p.add_argument_group("dynamics and budgets")
    g.add_argument("--steps", type=int, default=None, help="MD step budget (default: 3 x --segment x --max-calls / --batch for an "
                        "exploring run, so that the oracle-call budget ends it, e.g. 36000 for 40 calls; "
                        "2000 otherwise)")
    g.add_argument("--max-calls", type=int, default=None,
                   help="oracle-call budget: structures labelled during the MD (default 200)")
    g.add_argument("--wall-time", type=float, default=None, metavar="SECONDS",
                   help="wall-time budget in seconds, summed over resumes (default none)")
    g.add_argument("--temperature", default=None,
                   help="Langevin temperature in K, or T_START:T_END for a linear ramp over --steps (default 300)")
    g.add_argument("--temperature-cycles", type=int, default=None, metavar="N",
                   help="repeat the --temperature ramp N times over --steps (a sawtooth: T_START -> T_END every "
                        "steps/N steps), so that the whole range is visited early in the run (default 1)")
    g.add_argument("--dt", type=float, default=None, help="time step, fs (default 0.5)")
    g.add_argument("--friction", type=float, default=None, help="Langevin friction, 1/fs (default 0.01)")
    g.add_argument("--seed", type=int, default=None, help="seed of the velocities and thermostat noise (default 0)")
    g.add_argument("--checkpoint-every", type=int, default=None,
                   help="MD steps between checkpoints of the trusted state (default 50; also after every label)")
    g = p.add_argument_group(
        "selection in segments",
        "With --segment N the models run N MD steps at a time; every --sample-every steps the structure is "
        "kept as a candidate with its uncertainty (max over targets of std / threshold). At the end of the "
        "segment a candidate over its threshold is labelled (--selection), then up to --batch - 1 more; one "
        "retraining follows. Without --segment the first structure over a threshold is labelled.")
    g.add_argument("--segment", type=int, default=None, metavar="STEPS",
                   help="MD steps per segment (default 0: label the first structure over a threshold)")
    g.add_argument("--sample-every", type=int, default=None, metavar="STEPS",
                   help="MD steps between candidates in a segment (default 10)")
    g.add_argument("--batch", type=int, default=None, help="structures labelled per segment (default 1)")
    g.add_argument("--stop-factor", type=float, default=None,
                   help="a segment stops early at a candidate over this × its threshold; the next one starts "
                        "from the segment's start with new velocities (default 10)")
    g.add_argument("--walkers", action="store_true", default=None,
                   help="every segment starts from a random initial labelled frame with Maxwell-Boltzmann "
                        "velocities at the current temperature (short independent walkers)")
    g.add_argument("--pool", type=int, default=None, metavar="N",
                   help="keep the latest N candidates across segments and rescore them with the current models "
                        "before each pick, so a label is the most uncertain of many segments (default 0: the "
                        "segment's own candidates only)")
    g.add_argument("--selection", choices=("max", "density", "ivr"), default=None,
                   help="ivr (default; integrated variance reduction): the candidate over its threshold whose "
                        "label most lowers the models' own GP posterior variance summed over all candidates "
                        "(energy: atomic energies; lsoap dipole/polarizability: the structures' components; "
                        "each target as a fraction of what is left; RPR targets are left out, and with no GP "
                        "model at all density is used); max: the most uncertain candidate; density: the "
                        "candidate over its threshold that removes the most uncertainty from all candidates "
                        "(sum of their squared uncertainty ratios weighted by a Gaussian of the "
                        "sorted-distance distance); ivr and density are best with --pool")
    g = p.add_argument_group(
        "exploration (the default)",
        "An exploring run works in segments (--segment 300 and --pool 200 unless given) and starts every "
        "segment (every MPI replica) from the known structure farthest from all earlier starts: the labelled "
        "frames and the pool's candidates below --stop-factor whose energy is thermally accessible at the "
        "thermostat temperature (--explore-window), compared by sorted interatomic distances. "
        "The segments' temperatures cycle through T, T(1+h)/2 and T h (h = --explore-heat). Replicas from "
        "diverse starts push outwards from what is known instead of one trajectory that stays in its basin "
        "(see docs/active.md).")
    g.add_argument("--no-explore", dest="explore", action="store_false", default=None,
                   help="follow one trajectory from START (the loop before exploration; with --segment and "
                        "--walkers as given)")
    g.add_argument("--explore-heat", type=float, default=None, metavar="H",
                   help="hottest segment temperature as a multiple of --temperature (default 2; 1: no hot segments)")
    g.add_argument("--explore-window", type=float, default=None, metavar="W",
                   help="segment starts only from W sqrt(3N/2) kT below to kT (3N/2 + W sqrt(3N/2)) above the "
                        "lowest labelled energy (T the thermostat temperature, N atoms; default 3; needs the "
                        "energy target)")
    g.add_argument("--no-explore-filters", dest="explore_filters", action="store_false", default=None,
                   help="label what the models' dynamics reach even where a bond broke or formed, two atoms "
                        "nearly touch, or the oracle's energy lies far above the labelled set (by default such "
                        "structures, holes of a young energy model, end their segment or are refused; for a run "
                        "meant to see reactions)")
    g = p.add_argument_group(
        "aimed at a spectrum",
        "With --spectrum-window the run goes in rounds: --spectrum-steps MD steps with the models (a frame every "
        "--sample-every steps), --spectrum-samples dipole series drawn from the dipole model's posterior along "
        "them, and the relative 5-95 %% model band of the IR intensity in the window; the run stops when it is "
        "at most --spectrum-tolerance, else the --batch frames whose labels most narrow it are labelled and the "
        "models retrained (see docs/active.md). Needs the dipole target and a model that draws samples (lsoap).")
    g.add_argument("--spectrum-window", metavar="LOW:HIGH",
                   help="IR window in cm^-1 the run aims at, e.g. 600:800 (inside 0 to the Nyquist wavenumber of "
                        "frames --dt x --sample-every fs apart, wider than the rounds' resolution)")
    g.add_argument("--spectrum-tolerance", type=float, default=None,
                   help="stop when the relative model band of the window's IR intensity is at most this (default 0.1)")
    g.add_argument("--spectrum-steps", type=int, default=None,
                   help="MD steps of each round's trajectory (default 2000; sets the resolution)")
    g.add_argument("--spectrum-samples", type=int, default=None,
                   help="posterior draws of the dipole model per round (default 32)")
    p.set_defaults(func=cmd_active)

    p = sub.add_parser("demo", help="the main job on the built-in example: models, ML MD, IR and Raman spectra")
    p.add_argument("-o", "--output", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--quick", action="store_true", help="a reduced run (for tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and stage reports: only the final summary")
    p.set_defaults(func=cmd_demo)
    return parser


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings of a command as one line each: ``mdplugin: warning: ...``."""
    print(f"mdplugin: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads:
            _set_threads(args.threads)
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mdplugin: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"mdplugin: error: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, (MdpluginError, OSError)) else 1


def _set_threads(value: str) -> None:
    """``--threads N``: MDPLUGIN_THREADS for this command (checked here, named as the option)."""
    import os

    from ..core.threads import ENV, threads_for

    os.environ[ENV] = value
    try:
        threads_for("step")
    except ConfigError:
        raise ConfigError(f"--threads {value}: give a positive number of threads or 'auto'") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (MdpluginError, OSError)):
        text = f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
    if isinstance(exc, OSError) and getattr(exc, "filename", None) and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
