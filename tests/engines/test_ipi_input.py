"""The i-PI input writer (:mod:`mdplugin.engines.ipi.input`): every ensemble it writes is read by
i-PI's own reader into the simulation asked for, with the units converted by i-PI to the values
given in fs, K and GPa; a checkpoint input restarts from the checkpoint's positions and momenta;
bad settings are one-line errors. The real i-PI runs in test_ipi*.py, test_hamiltonian_engines.py
and tests/active/test_active_onthefly.py use the writer through tests/support/ipi_utils.py."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units as _u
from ase.build import bulk, molecule
from ase.io import write
from ipi.engine import thermostats
from ipi.engine.simulation import Simulation

from mdplugin.core.errors import ConfigError
from mdplugin.engines.ipi import Barostat, Socket, Thermostat, input_xml, write_input

#: atomic units, from CODATA through ASE (independent of i-PI's own unit table)
AU_TIME_FS = _u._hbar / (_u.Hartree * _u._e) * 1e15  # 0.0241888 fs
KELVIN_AU = _u.kB / _u.Hartree  # Hartree per kelvin
GPA_AU = 1e9 * (_u.Bohr * 1e-10) ** 3 / (_u.Hartree * _u._e)  # Hartree/bohr³ per GPa


def load(text: str) -> Simulation:
    """The i-PI simulation of an input (read-only: no socket opened, no output file written)."""
    return Simulation.load_from_xml(text, custom_verbosity="quiet", read_only=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ipi_input")
    water = molecule("H2O")
    water.cell = [12.0, 13.0, 14.0]
    water.center()
    write(folder / "water.xyz", water)
    copper = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    write(folder / "cu.xyz", copper)
    return {"water": folder / "water.xyz", "cu": folder / "cu.xyz", "folder": folder, "n_water": 3, "n_cu": 8}


@pytest.mark.parametrize("ensemble, n_beads, thermostat_class, tau_fs", [
    ("nvt", 1, thermostats.ThermoSVR, 100.0),
    ("nvt", 4, thermostats.ThermoPILE_L, 100.0),
    ("trpmd", 4, thermostats.ThermoPILE_G, 1000.0),
    ("nve", 1, thermostats.Thermostat, None),  # i-PI's no-op thermostat
])
def test_molecule_inputs_are_the_simulation_asked_for(files, ensemble, n_beads, thermostat_class, tau_fs):
    text = input_xml(init=files["water"], steps=7, socket="water", ensemble=ensemble, n_beads=n_beads, dt_fs=0.4,
                     temperature_K=250.0, seed=99, std_stride=5, checkpoint_stride=7, sockets_prefix="/tmp/x_")
    sim = load(text)
    system = sim.syslist[0]
    assert sim.tsteps == 7 and sim.prng.seed == 99 and sim.sockets_prefix == "/tmp/x_"
    assert system.beads.nbeads == n_beads and system.beads.natoms == files["n_water"]
    assert system.motion.enstype == ("nvt" if ensemble == "trpmd" else ensemble)
    np.testing.assert_allclose(system.motion.dt * AU_TIME_FS, 0.4, rtol=1e-6)  # fs -> i-PI's atomic units
    np.testing.assert_allclose(system.ensemble.temp / KELVIN_AU, 250.0, rtol=1e-5)
    thermostat = system.motion.thermostat
    assert type(thermostat) is thermostat_class
    if tau_fs is not None:
        np.testing.assert_allclose(thermostat.tau * AU_TIME_FS, tau_fs, rtol=1e-6)
    if ensemble == "trpmd":
        assert thermostat.pilescale == 0.5  # λ: half of critical damping on the internal modes
    # thermal velocities drawn at the temperature (3 atoms x beads: a loose bound)
    assert np.abs(system.beads.p).max() > 0
    ff = sim.fflist["mdplugin"]
    assert (ff.socket.mode, ff.socket.address, ff.dopbc) == ("unix", "water", False)
    outputs = {getattr(o, "filename", None): o for o in sim.outtemplate}
    assert outputs["dipole"].extra_type == "dipole" and outputs["polarizability"].extra_type == "polarizability"
    assert outputs["std"].extra_type == "dipole_std,polarizability_std" and outputs["std"].stride == 5
    assert outputs["pos"].what == "positions" and outputs["chk"].stride == 7
    # one extras file per bead: i-PI's default when a trajectory names no bead
    assert all(getattr(outputs[name], "ibead", -1) < 0 for name in ("dipole", "polarizability", "std"))


def test_npt_input_of_a_crystal(files):
    text = input_xml(init=files["cu"], steps=3, socket=Socket("127.0.0.1", mode="inet", port=31999, batch_size=2),
                     ensemble="npt", pbc=True, dt_fs=1.0, temperature_K=500.0, fixcom=False, extras=(),
                     properties=("step", "conserved", "volume"), properties_stride=2, positions_stride=None,
                     barostat=Barostat(tau_fs=20.0, pressure_GPa=2.5,
                                       thermostat=Thermostat("langevin", 50.0)),
                     thermostat=Thermostat("langevin", 60.0))
    sim = load(text)
    system = sim.syslist[0]
    assert system.beads.natoms == files["n_cu"] and not system.motion.fixcom
    np.testing.assert_allclose(system.cell.V, 2 * 3.6**3 / _u.Bohr**3, rtol=1e-6)  # the cell of the file
    barostat = system.motion.barostat
    assert type(barostat).__name__ == "BaroBZP"  # i-PI's isotropic barostat
    np.testing.assert_allclose(barostat.tau * AU_TIME_FS, 20.0, rtol=1e-6)
    np.testing.assert_allclose(barostat.thermostat.tau * AU_TIME_FS, 50.0, rtol=1e-6)
    np.testing.assert_allclose(system.motion.thermostat.tau * AU_TIME_FS, 60.0, rtol=1e-6)
    np.testing.assert_allclose(system.ensemble.pext / GPA_AU, 2.5, rtol=1e-4)  # i-PI's table: 3e-5 off CODATA 2018
    ff = sim.fflist["mdplugin"]
    assert (ff.socket.mode, ff.socket.address, ff.socket.port, ff.dopbc) == ("inet", "127.0.0.1", 31999, True)
    assert "<batch_size> 2 </batch_size>" in text
    assert [o.filename for o in sim.outtemplate] == ["out"] and sim.outtemplate[0].stride == 2


def test_checkpoint_input_restarts_from_its_positions_and_momenta(files):
    """NVE from an NVT checkpoint (the liquid-water example's NVT -> NVE): positions, momenta and
    cell come from the checkpoint, no new velocities are drawn."""
    from ipi.inputs.simulation import InputSimulation

    nvt = load(input_xml(init=files["cu"], steps=5, socket="a", pbc=True, seed=5))
    state = InputSimulation()
    state.store(nvt)
    chk = files["folder"] / "nvt.chk"
    chk.write_text(state.write("simulation"))  # what i-PI's <checkpoint> output writes
    text = input_xml(init=chk, init_mode="chk", steps=5, socket="a", ensemble="nve", pbc=True, seed=6)
    assert "velocities" not in text
    nve = load(text)
    before, after = nvt.syslist[0].beads, nve.syslist[0].beads
    np.testing.assert_allclose(after.q, before.q, rtol=1e-8)
    np.testing.assert_allclose(after.p, before.p, rtol=1e-8)
    np.testing.assert_allclose(nve.syslist[0].cell.h, nvt.syslist[0].cell.h, rtol=1e-8)


def test_write_input_writes_the_text(tmp_path, files):
    path = write_input(tmp_path / "sub" / "input.xml", init=files["water"], steps=2, socket="w")
    assert path.read_text() == input_xml(init=files["water"], steps=2, socket="w")
    assert [p.name for p in path.parent.iterdir()] == ["input.xml"]  # no temporary file left


@pytest.mark.parametrize("settings, message", [
    ({"ensemble": "nph"}, "ensemble 'nph': not one of nve, nvt, trpmd, npt"),
    ({"ensemble": "trpmd"}, "'trpmd' needs a ring polymer: n_beads > 1"),
    ({"ensemble": "npt"}, "'npt' changes the cell: it needs a periodic system"),
    ({"ensemble": "nve", "thermostat": Thermostat("svr", 10.0)}, "'nve' takes no thermostat"),
    ({"barostat": Barostat()}, "a barostat goes with ensemble 'npt', not 'nvt'"),
    ({"n_beads": 0}, "n_beads must be a positive whole number, got 0"),
    ({"n_beads": 2.5}, "n_beads must be a positive whole number"),
    ({"dt_fs": -0.5}, "dt_fs must be a positive number, got -0.5"),
    ({"temperature_K": 0}, "temperature_K must be a positive number"),
    ({"steps": -1}, "steps must be a whole number >= 0"),
    ({"std_stride": 0}, "std_stride must be a positive whole number"),
    ({"extras": ("dipole", "charges")}, "extras 'charges': mdplugin's PES sends dipole, polarizability"),
    ({"extras": (), "std_stride": 10}, "std_stride writes the uncertainties of the extras"),
    ({"socket": Socket("h", mode="inet")}, r"an inet socket \(h\) needs a port"),
    ({"socket": Socket("h", port=3)}, r"a port \(3\) makes no sense with a UNIX socket"),
    ({"socket": Socket("h", mode="tcp")}, "socket mode 'tcp': not 'unix' or 'inet'"),
])
def test_bad_settings_are_one_line_errors(files, settings, message):
    kwargs = {"init": files["water"], "steps": 5, "socket": "w", **settings}
    with pytest.raises(ConfigError, match=message) as info:
        input_xml(**kwargs)
    assert "\n" not in str(info.value)
