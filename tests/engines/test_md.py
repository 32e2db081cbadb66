"""ML molecular dynamics: energy conservation, an intact molecule, trajectories with dipoles and
polarizabilities readable back, and the ``mdplugin md`` command."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

from mdplugin.engines.ase import MLCalculator
from mdplugin.cli.parser import main
from mdplugin.structures.data import read_dataset, write_dataset, Dataset
from mdplugin.engines.md import largest_bond_gap, run_md
from mdplugin.models.soap import SoapEnergyModel

from ..conftest import dichloroethane
from .test_ase import ToyTensorModel

REFERENCE = dichloroethane()
_D0 = np.linalg.norm(REFERENCE.positions[:, None] - REFERENCE.positions[None], axis=-1)


def elastic_network(atoms) -> tuple[float, np.ndarray]:
    """Harmonic springs (5 eV/Å²) between all atom pairs at their anti-DCE distances: a bound molecule."""
    d = atoms.positions[:, None] - atoms.positions[None]
    r = np.linalg.norm(d, axis=-1) + np.eye(len(atoms))
    k = 5.0 * (1 - np.eye(len(atoms)))
    energy = 0.25 * np.sum(k * (r - _D0 - np.eye(len(atoms))) ** 2)
    grad = (k * (r - _D0 - np.eye(len(atoms))) / r)[:, :, None] * d
    return float(energy), -grad.sum(axis=1)


class ElasticNetwork(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        e, f = elastic_network(self.atoms)
        self.results = {"energy": e, "free_energy": e, "forces": f}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    frames = [dichloroethane(i, 0.06) for i in range(40)]
    labels = [elastic_network(a) for a in frames]
    energy = SoapEnergyModel(n_sparse=40, energy_noise=1e-4, force_noise=1e-3).fit(
        frames, {"energy": [e for e, _ in labels], "forces": [f for _, f in labels]})
    dip = ToyTensorModel("dipole").fit([], None)
    pol = ToyTensorModel("polarizability").fit([], None)
    folder = tmp_path_factory.mktemp("models")
    energy.save(folder / "energy.npz")
    return energy, dip, pol, folder


def test_nve_conserves_energy_and_keeps_the_molecule(models, tmp_path):
    energy, dip, pol, _ = models
    calc = MLCalculator(energy=energy, dipole=dip, polarizability=pol)
    out = tmp_path / "nve.xyz"
    summary = run_md(dichloroethane(), calc, steps=300, dt_fs=0.5, output=out, temperature_K=300,
                     thermostat="none", interval=10, seed=1, progress=False)
    assert abs(summary.total_energy_drift_eV_per_atom) <= 1e-3
    assert summary.total_energy_max_deviation_eV_per_atom <= 2e-3
    data = read_dataset(out)
    assert len(data) == summary.frames == 31
    assert all(largest_bond_gap(a) < 2.5 for a in data.frames)
    # the system moved and kept its temperature scale
    assert not np.allclose(data.frames[0].positions, data.frames[-1].positions)
    assert 50 < summary.temperature_mean_K < 600


def test_trajectory_holds_all_properties_for_every_frame(models, tmp_path):
    energy, dip, pol, _ = models
    calc = MLCalculator(energy=energy, dipole=dip, polarizability=pol)
    out = tmp_path / "traj.xyz"
    run_md(dichloroethane(), calc, steps=20, dt_fs=0.5, output=out, interval=5, progress=False,
           uncertainty_every=2)
    data = read_dataset(out, properties=["energy", "forces", "dipole", "polarizability"])
    assert len(data) == 5
    for i, atoms in enumerate(data.frames):
        assert np.allclose(data.dipole[i], dip.predict([atoms])[0], atol=1e-5)
        assert np.allclose(data.polarizability[i], pol.predict([atoms])[0], atol=1e-5)
        assert data.energy[i] == pytest.approx(energy.predict([atoms])[0], abs=1e-5)
    import ase.io

    stds = ("energy_std", "dipole_std", "polarizability_std")
    for i, frame in enumerate(ase.io.read(out, index=":")):
        for key in ("time", "temperature", "total_energy"):
            assert key in frame.info
        # the uncertainties (costly) on every 2nd written frame, the first included, and right
        assert all((key in frame.info) == (i % 2 == 0) for key in stds), (i, sorted(frame.info))
        if i % 2 == 0:
            _, mu_std = dip.predict([data.frames[i]], return_std=True)
            assert np.allclose(frame.info["dipole_std"], mu_std[0], rtol=1e-6)
    assert frame.info["time"] == pytest.approx(20 * 0.5)


def test_uncertainties_every_tenth_frame_by_default_and_never_with_zero(models, tmp_path):
    """run_md records *_std on every 10th written frame by default (each costs ~25 MD steps), on
    none with uncertainty_every=0, and refuses an uncertainty limit it could not check."""
    import ase.io

    from mdplugin.core.errors import ConfigError

    energy, dip, _, _ = models
    calc = MLCalculator(energy=energy, dipole=dip)
    out = tmp_path / "d.xyz"
    run_md(dichloroethane(), calc, steps=12, dt_fs=0.5, output=out, progress=False)
    has_std = ["dipole_std" in f.info and "energy_std" in f.info for f in ase.io.read(out, index=":")]
    assert has_std == [i % 10 == 0 for i in range(13)]
    run_md(dichloroethane(), calc, steps=3, dt_fs=0.5, output=out, progress=False, uncertainty_every=0)
    assert not any("dipole_std" in f.info for f in ase.io.read(out, index=":"))
    with pytest.raises(ConfigError, match="uncertainty_every"):
        run_md(dichloroethane(), calc, steps=3, dt_fs=0.5, output=out, progress=False, uncertainty_every=0,
               max_uncertainty=1.0)


def test_langevin_approaches_the_target_temperature(tmp_path):
    calc = ElasticNetwork()
    summary = run_md(dichloroethane(), calc, steps=600, dt_fs=1.0, output=tmp_path / "l.xyz",
                     temperature_K=400, thermostat="langevin", friction_per_fs=0.1, interval=20,
                     seed=3, progress=False)
    # 8 atoms: large fluctuations; the mean over the run is within a broad band
    assert 250 < summary.temperature_mean_K < 550


def test_md_command_with_model_files(models, tmp_path, capsys):
    energy, dip, pol, folder = models
    start = tmp_path / "start.xyz"
    write_dataset(start, Dataset(frames=[dichloroethane()]))
    rpr = pytest.importorskip("mdplugin.models.rpr")
    frames = [dichloroethane(i, 0.06) for i in range(30)]
    rpr.RPRModel(target="dipole").fit(frames, dip.predict(frames)).save(folder / "dip.npz")
    rpr.RPRModel(target="polarizability").fit(frames, pol.predict(frames)).save(folder / "pol.npz")
    out = tmp_path / "md.xyz"
    code = main(["md", str(start), "--energy", str(folder / "energy.npz"), "--dipole", str(folder / "dip.npz"),
                 "--polarizability", str(folder / "pol.npz"), "--steps", "10", "--dt", "0.5",
                 "--interval", "2", "--std-every", "3", "--quiet", "-o", str(out)])
    assert code == 0
    assert "steps/s" in capsys.readouterr().out
    data = read_dataset(out, properties=["energy", "forces", "dipole", "polarizability"])
    assert len(data) == 6
    import ase.io

    assert ["energy_std" in f.info for f in ase.io.read(out, index=":")] == [i % 3 == 0 for i in range(6)]


def test_md_command_tensor_precision(models, tmp_path, monkeypatch):
    """--tensor-precision reaches the λ-SOAP model (single by default), and the single-precision
    dipoles equal the double ones to float32 rounding along the same trajectory (energies and
    forces are double either way)."""
    from mdplugin.models.lsoap import LambdaSoapModel

    energy, dip, _, folder = models
    frames = [dichloroethane(i, 0.06) for i in range(25)]
    hypers = {k: getattr(energy, k) for k in ("cutoff", "max_radial", "max_angular", "gaussian_width", "smoothing_width")}
    LambdaSoapModel(target="dipole", n_sparse=20, n_components=0, **hypers).fit(
        frames, dip.predict(frames)).save(folder / "dip-lsoap.npz")
    used = []
    original = LambdaSoapModel.predict_from_features
    monkeypatch.setattr(LambdaSoapModel, "predict_from_features",
                        lambda self, exp, **kw: used.append(kw.get("precision")) or original(self, exp, **kw))
    start = tmp_path / "start.xyz"
    write_dataset(start, Dataset(frames=[dichloroethane(3, 0.1)]))
    runs = {}
    for precision in ("single", "double"):
        out = tmp_path / f"{precision}.xyz"
        extra = [] if precision == "single" else ["--tensor-precision", "double"]  # single is the default
        used.clear()
        assert main(["md", str(start), "--energy", str(folder / "energy.npz"), "--dipole", str(folder / "dip-lsoap.npz"),
                     "--steps", "6", "--dt", "0.5", "--quiet", "-o", str(out)] + extra) == 0
        assert used and set(used) == {precision}
        runs[precision] = read_dataset(out, properties=["energy", "dipole"])
    np.testing.assert_array_equal(runs["single"].energy, runs["double"].energy)
    mu_single, mu_double = runs["single"].dipole, runs["double"].dipole
    assert np.abs(mu_double).max() > 0.01
    np.testing.assert_allclose(mu_single, mu_double, rtol=0, atol=1e-5 * np.abs(mu_double).max())


def test_md_command_on_tblite_with_ml_dipole(models, tmp_path, capsys):
    pytest.importorskip("tblite")
    energy, dip, pol, folder = models
    start = tmp_path / "start.xyz"
    write_dataset(start, Dataset(frames=[dichloroethane()]))
    out = tmp_path / "tb.xyz"
    assert main(["md", str(start), "--energy", "tblite", "--steps", "4", "--dt", "0.5", "--quiet",
                 "-o", str(out)]) == 0
    data = read_dataset(out, properties=["energy", "forces"])
    assert len(data) == 5 and np.all(np.abs(data.energy - data.energy[0]) < 0.5)


def test_md_errors(models, tmp_path):
    energy, *_ = models
    start = tmp_path / "start.xyz"
    write_dataset(start, Dataset(frames=[dichloroethane()]))
    assert main(["md", str(start), "--energy", str(tmp_path / "none.npz"), "--steps", "2", "--dt", "0.5",
                 "-o", str(tmp_path / "x.xyz")]) != 0
    assert main(["md", str(start), "--energy", "tblite", "--steps", "2", "--dt", "-1",
                 "-o", str(tmp_path / "x.xyz")]) != 0


def test_nve_with_a_model_trained_on_dce_data(examples_dir, tmp_path):
    """A SOAP model trained on 150 GFN2-xTB frames: short NVE from 300 K conserves energy and
    keeps the molecule (the 10 ps figure is in docs/benchmarks.md)."""
    from mdplugin.models.training import select_training

    data = select_training(read_dataset(examples_dir / "dce_train.xyz", properties=["energy", "forces"]), 150)
    model = SoapEnergyModel(n_sparse=100).fit(data.frames, {"energy": data.energy, "forces": data.forces})
    summary = run_md(data.frames[0], MLCalculator(energy=model), steps=200, dt_fs=0.5,
                     output=tmp_path / "nve.xyz", temperature_K=300, thermostat="none", interval=20,
                     seed=2, progress=False)
    assert abs(summary.total_energy_drift_eV_per_atom) <= 1e-3
    assert summary.total_energy_max_deviation_eV_per_atom <= 1e-3
    assert all(largest_bond_gap(a) < 2.5 for a in read_dataset(tmp_path / "nve.xyz").frames)


def test_uncertainty_limit_stops_the_run(models, tmp_path):
    from mdplugin.core.errors import ConfigError, SimulationError

    energy, dip, pol, _ = models
    calc = MLCalculator(energy=energy, dipole=dip)
    out = tmp_path / "u.xyz"
    with pytest.raises(SimulationError, match="energy_std"):
        run_md(dichloroethane(), calc, steps=10, dt_fs=0.5, output=out, interval=5, progress=False,
               max_uncertainty={"energy_std": 1e-12})
    assert len(read_dataset(out)) == 1  # the uncertain frame is kept
    summary = run_md(dichloroethane(), calc, steps=10, dt_fs=0.5, output=out, interval=5, progress=False,
                     max_uncertainty={"energy_std": 1e3, "dipole_std": 1e3})
    assert summary.frames == 3
    with pytest.raises(ConfigError, match="forces_std"):
        run_md(dichloroethane(), calc, steps=1, dt_fs=0.5, output=out, progress=False,
               max_uncertainty={"forces_std": 1.0})


def test_uncertainty_limit_without_the_uncertainties_is_refused(models, tmp_path, capsys):
    """A limit on an uncertainty nothing computes is a clear error, not a limit that never fires."""
    from mdplugin.core.errors import ConfigError

    energy, dip, pol, folder = models
    out = tmp_path / "u.xyz"
    with pytest.raises(ConfigError, match="gives no dipole_std .it gives energy_std"):
        run_md(dichloroethane(), MLCalculator(energy=energy), steps=1, dt_fs=0.5, output=out, progress=False,
               max_uncertainty={"dipole_std": 1.0})
    with pytest.raises(ConfigError, match="gives no uncertainties"):
        run_md(dichloroethane(), ElasticNetwork(), steps=1, dt_fs=0.5, output=out, progress=False,
               max_uncertainty=1.0)
    start = tmp_path / "start.xyz"
    write_dataset(start, Dataset(frames=[dichloroethane()]))
    code = main(["md", str(start), "--energy", str(folder / "energy.npz"), "--steps", "2", "--dt", "0.5",
                 "--max-uncertainty", "0.1", "--std-every", "0", "--quiet", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--max-uncertainty" in err[0] and "--std-every" in err[0], err


def test_md_command_max_uncertainty_is_a_one_line_error(models, tmp_path, capsys):
    """`mdplugin md --max-uncertainty` stops the run with one line naming the step; frames so far stay readable."""
    energy, dip, pol, folder = models
    start = tmp_path / "start.xyz"
    write_dataset(start, Dataset(frames=[dichloroethane()]))
    out = tmp_path / "md.xyz"
    code = main(["md", str(start), "--energy", str(folder / "energy.npz"), "--steps", "20", "--dt", "0.5",
                 "--max-uncertainty", "1e-12", "--quiet", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "energy_std" in err[0] and "step" in err[0], err
    assert len(read_dataset(out, properties=["energy"])) >= 1


def test_bad_temperature_or_friction_is_refused(tmp_path):
    """A negative (or NaN) temperature or friction used to run and write NaN positions."""
    from mdplugin.core.errors import ConfigError

    for kwargs, word in (({"temperature_K": -3.0}, "temperature"), ({"temperature_K": float("nan")}, "temperature"),
                         ({"friction_per_fs": -1.0}, "friction")):
        with pytest.raises(ConfigError, match=word):
            run_md(dichloroethane(), ElasticNetwork(), steps=2, dt_fs=0.5, output=tmp_path / "t.xyz",
                   progress=False, **kwargs)
        assert not (tmp_path / "t.xyz").exists()


def test_a_run_that_cannot_start_leaves_an_existing_output_alone(models, tmp_path, capsys):
    """`mdplugin md` on a structure the model cannot handle (an element it was not trained on) is one
    error line, and a trajectory of the same name from an earlier run is not emptied."""
    from ase import Atoms

    energy, dip, pol, folder = models
    out = tmp_path / "traj.xyz"
    run_md(dichloroethane(), ElasticNetwork(), steps=4, dt_fs=0.5, output=out, progress=False)
    before = out.read_bytes()
    water = tmp_path / "water.xyz"
    write_dataset(water, Dataset(frames=[Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])]))
    code = main(["md", str(water), "--energy", str(folder / "energy.npz"), "--steps", "2", "--dt", "0.5",
                 "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "O" in err[-1] and "md:" not in err[-1], err
    assert out.read_bytes() == before


def test_lost_atom_test_sees_a_molecule_across_the_cell_wall():
    """largest_bond_gap searches images in a cell: a molecule cut by the wall is whole (the former
    dense code measured atoms a cell length apart and would call it broken)."""
    whole = dichloroethane()
    split = whole.copy()
    split.cell = np.diag([12.0, 11.0, 13.0])
    split.pbc = True
    split.positions -= whole.positions.mean(axis=0)  # centred on the cell corner, then wrapped
    split.wrap()
    assert np.ptp(split.positions, axis=0).max() > 8.0
    assert largest_bond_gap(whole) < 2.5
    assert largest_bond_gap(split) == pytest.approx(largest_bond_gap(whole), abs=1e-12)
    lone = whole.copy()
    lone.positions[0] += [6.0, 0.0, 0.0]
    assert largest_bond_gap(lone) == np.inf  # no neighbour within 4 Å: lost


def test_nve_in_a_periodic_box_conserves_energy_as_atoms_cross_the_wall(tmp_path):
    """An ML energy model of a periodic C2H2O2 box (images within the cutoff): NVE conserves the
    total energy while atoms leave the cell through its walls (energy and forces continuous across
    the wall), and the trajectory keeps the cell."""
    from mdplugin.models import build

    from ..models.test_contract import labels, periodic_box

    frames = [periodic_box(i) for i in range(16)]
    y = [labels(a) for a in frames]
    energy = build("soap", n_sparse=16, cutoff=3.5, max_radial=3, max_angular=2).fit(
        frames, {"energy": [t["energy"] for t in y], "forces": [t["forces"] for t in y]})
    start = periodic_box(123)
    start.positions -= [0.45, 0.45, 0.45]  # atoms within ~0.2 Å of three cell faces (some across: wrapped)
    start.wrap()
    out = tmp_path / "box.xyz"
    summary = run_md(start, MLCalculator(energy=energy), steps=400, dt_fs=0.5, output=out, temperature_K=300,
                     thermostat="none", interval=5, seed=3, progress=False)
    assert abs(summary.total_energy_drift_eV_per_atom) <= 1e-4  # measured 0.002 meV/atom
    assert summary.total_energy_max_deviation_eV_per_atom <= 2e-4  # measured 0.006 meV/atom
    traj = read_dataset(out, properties=["energy"]).frames
    assert all(a.pbc.all() and np.allclose(a.cell.array, start.cell.array) for a in traj)
    scaled = np.array([a.cell.scaled_positions(a.positions) for a in traj])
    inside_at_start = np.all((scaled[0] >= 0) & (scaled[0] < 1))
    crossed = np.any((scaled < 0) | (scaled >= 1), axis=(0, 2))
    assert inside_at_start and crossed.sum() >= 2, "no atom crossed the cell wall"
