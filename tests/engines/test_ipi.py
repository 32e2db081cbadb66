"""The i-PI client against a real i-PI server (``i-pi input.xml``), on UNIX and TCP sockets.

What i-PI records (positions, extras) is read back with i-PI's own reader and compared with
MLCalculator predictions at the recorded positions; forces are checked by finite differences;
the client's exit status is checked for a normal end, a missing server and a killed server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.io import write

import ipi
from ase.calculators.calculator import Calculator, all_changes
from mdplugin.core.errors import ConfigError
from mdplugin.engines.ipi import IPIConnectionError, MdpluginDriver, extras_json, make_calculator, run_client
from mdplugin.core.units import BOHR, HARTREE

from ..conftest import dichloroethane
from ..support.ipi_utils import (DRIVER_FILE, REPO, client_command, env, free_port, ipi_input, process,
                                train_models, wait, wait_for)

STEPS = 20


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """RPR dipole and polarizability model files (12 tblite-labelled frames) and the template."""
    folder = tmp_path_factory.mktemp("models")
    frames = [dichloroethane(rng=i, noise=0.08) for i in range(12)]
    dip, pol = train_models(folder, frames)
    start = dichloroethane(rng=42, noise=0.05)  # no symmetry: no component is zero by symmetry
    start.cell = [20.0, 20.0, 20.0]
    start.center()
    template = folder / "dce.xyz"
    write(template, start)
    return {"template": template, "dipole": dip, "polarizability": pol}


@pytest.fixture(scope="module")
def calculator(models):
    """MLCalculator with the dipole and polarizability models (no energy: not compared)."""
    return make_calculator(None, models["dipole"], models["polarizability"])


def _predict(calc, atoms, names=("dipole", "polarizability", "dipole_std", "polarizability_std")) -> dict:
    """MLCalculator results (ASE units) at ``atoms``."""
    return {name: calc.get_property(name, atoms) for name in names}


def _check_recorded(folder: Path, calc, template, bead: int = 0, min_frames: int = STEPS) -> int:
    """i-PI's recorded extras at ``bead`` equal the calculator's predictions at the recorded positions."""
    frames = ipi.read_trajectory(str(folder / f"sim.pos_{bead}.extxyz"))
    dip = ipi.read_trajectory(str(folder / f"sim.dipole_{bead}"), format="extras")
    pol = ipi.read_trajectory(str(folder / f"sim.polarizability_{bead}"), format="extras")
    std = ipi.read_trajectory(str(folder / f"sim.std_{bead}"), format="extras")
    assert len(frames) >= min_frames + 1
    assert len(dip["dipole"]) == len(pol["polarizability"]) == len(frames)
    assert np.array_equal(dip["step"], pol["step"])
    moved = 0.0
    for i, frame in enumerate(frames):
        atoms = template.copy()
        atoms.positions = frame.positions
        moved = max(moved, np.abs(atoms.positions - template.positions).max())
        res = _predict(calc, atoms)
        mu = np.asarray(res["dipole"]) / BOHR  # e·Å -> e·bohr
        alpha = np.asarray(res["polarizability"]).ravel() / BOHR**3  # Å³ -> bohr³, row-major
        np.testing.assert_allclose(dip["dipole"][i], mu, rtol=0, atol=1e-6 * np.abs(mu).max())
        np.testing.assert_allclose(pol["polarizability"][i], alpha, rtol=0, atol=1e-6 * np.abs(alpha).max())
        mu_std = np.ravel(res["dipole_std"]) / BOHR
        alpha_std = np.ravel(res["polarizability_std"]) / BOHR**3
        recorded = std["dipole_std,polarizability_std"][i]
        np.testing.assert_allclose(recorded[:3], mu_std, rtol=0, atol=1e-6 * np.abs(mu_std).max())
        np.testing.assert_allclose(recorded[3:], alpha_std, rtol=0, atol=1e-6 * np.abs(alpha_std).max())
    assert moved > 1e-3, "the atoms did not move: this was not an MD run"
    return len(frames)


def _start_server(folder: Path, xml: str, timeout: float = 120.0):
    (folder / "input.xml").write_text(xml)
    return process(["i-pi", "input.xml"], folder, folder / "ipi.log", timeout=timeout)


# ----------------------------------------------------------------------------------------------
# the PES on its own
# ----------------------------------------------------------------------------------------------
def test_pes_units_and_forces_are_gradients(models):
    """Atomic units out; forces (Ha/bohr) are minus the finite-difference gradient of the energy (Ha)."""
    driver = MdpluginDriver(template=str(models["template"]), energy="tblite", dipole=str(models["dipole"]),
                            polarizability=str(models["polarizability"]))
    atoms = dichloroethane(rng=3, noise=0.05)
    pos_bohr = atoms.positions / BOHR
    cell = np.eye(3) * 20.0 / BOHR
    energy, forces, virial, extras = driver.compute_structure(cell, pos_bohr)
    reference = make_calculator("tblite", models["dipole"], models["polarizability"])
    ref = _predict(reference, atoms, ("energy", "forces", "dipole", "polarizability"))
    # (tblite restarts its SCF from the previous call: ~1e-9 Ha, ~1e-6 Ha/bohr apart)
    assert energy == pytest.approx(ref["energy"] / HARTREE, rel=1e-9)
    np.testing.assert_allclose(forces, ref["forces"] * BOHR / HARTREE, rtol=0, atol=1e-5)
    assert forces.dtype == np.float64 and forces.shape == (8, 3) and virial.shape == (3, 3)
    data = json.loads(extras)
    np.testing.assert_allclose(data["dipole"], np.asarray(ref["dipole"]) / BOHR, rtol=1e-12)
    np.testing.assert_allclose(data["polarizability"], np.ravel(ref["polarizability"]) / BOHR**3, rtol=1e-12)
    assert len(data["polarizability"]) == 9 and len(data["polarizability_std"]) == 9
    # row-major: element [i, j] is entry 3 i + j
    alpha = np.asarray(ref["polarizability"])
    assert data["polarizability"][1] == pytest.approx(alpha[0, 1] / BOHR**3)
    # forces are −dE/dx, in Hartree/bohr, by central differences in bohr
    h = 1e-3
    for atom, axis in [(0, 2), (2, 1), (5, 0)]:
        plus, minus = pos_bohr.copy(), pos_bohr.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        fd = -(driver.compute_structure(cell, plus)[0] - driver.compute_structure(cell, minus)[0]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(fd, abs=1e-5)
        assert abs(fd) > 1e-3
    # batched requests (i-PI's batch mode) give the same answers
    batch = driver.compute([cell, cell], [pos_bohr, pos_bohr])
    for e_b, f_b, v_b, x_b in batch:
        assert e_b == pytest.approx(energy, rel=1e-9) and np.allclose(f_b, forces, rtol=0, atol=1e-5)
        assert x_b == extras


def test_extras_units_and_keys():
    res = {"energy": -1.0, "forces": np.zeros((2, 3)), "dipole": np.array([BOHR, 0, 0]),
           "polarizability": np.arange(9.0).reshape(3, 3) * BOHR**3, "energy_std": HARTREE,
           "dipole_std": np.ones(3) * BOHR}
    data = json.loads(extras_json(res))
    assert set(data) == {"dipole", "polarizability", "energy_std", "dipole_std"}
    assert data["dipole"] == pytest.approx([1.0, 0.0, 0.0], rel=1e-12)
    assert data["polarizability"] == pytest.approx(np.arange(9.0), rel=1e-12)
    assert data["energy_std"] == pytest.approx(1.0, rel=1e-12)
    assert data["dipole_std"] == pytest.approx([1.0, 1.0, 1.0], rel=1e-12)
    assert extras_json({"energy": 0.0, "forces": np.zeros((1, 3))}) == ""


class _Counting(Calculator):
    """E = ½ k |r − r₀|² (eV, Å) with a dipole q r̄; records every call and its system changes."""

    implemented_properties = ["energy", "forces", "dipole"]

    def __init__(self, reference, **kwargs):
        super().__init__(**kwargs)
        self.reference, self.calls = reference, []

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls.append(list(system_changes))
        d = self.atoms.positions - self.reference
        self.results = {"energy": 0.5 * (d**2).sum(), "forces": -d, "dipole": 0.1 * self.atoms.positions.mean(0)}


def test_pes_tells_the_calculator_what_changed(models):
    """Only positions change between i-PI requests (cell too for a periodic template); the same
    positions twice are not recomputed; any ASE calculator can be served (here in ASE units)."""
    from ase.io import read

    template = read(models["template"])
    calc = _Counting(template.positions)
    driver = MdpluginDriver(template=str(models["template"]), calculator=calc)
    assert calc.calls == [list(all_changes)] and driver.properties == ["energy", "forces", "dipole"]
    pos = template.positions / BOHR + 0.01
    cell = np.eye(3) * 20.0 / BOHR
    energy, forces, _, extras = driver.compute_structure(cell, pos)
    assert energy == pytest.approx(0.5 * 8 * 3 * (0.01 * BOHR) ** 2 / HARTREE, rel=1e-12)
    np.testing.assert_allclose(forces, -0.01 * BOHR * BOHR / HARTREE, rtol=1e-12)
    assert json.loads(extras)["dipole"] == pytest.approx(0.1 * (template.positions.mean(0) + 0.01 * BOHR) / BOHR)
    driver.compute_structure(cell, pos)
    assert calc.calls[1:] == [["positions"]]


def test_bad_atom_count_is_a_clear_error(models):
    driver = MdpluginDriver(template=str(models["template"]), energy="tblite")
    with pytest.raises(Exception, match="i-PI sent 3 atoms but the template"):
        driver.compute_structure(np.eye(3), np.zeros((3, 3)))


def test_models_beside_a_calculator_of_its_own_are_refused(models):
    """`mdplugin ipi --active RUN --dipole M` used to ignore the model silently."""
    from ase.calculators.emt import EMT

    for option, value in (("dipole", models["dipole"]), ("polarizability", models["polarizability"]),
                          ("energy", models["dipole"])):
        with pytest.raises(ConfigError, match=f"--{option}: not with a calculator of its own"):
            MdpluginDriver(template=str(models["template"]), calculator=EMT(), **{option: str(value)})


# ----------------------------------------------------------------------------------------------
# real i-PI runs
# ----------------------------------------------------------------------------------------------
def test_unix_socket_nvt_run_records_model_extras(tmp_path, models, calculator):
    """i-PI on a UNIX socket in tmp_path, ``mdplugin ipi --unix``: 20 NVT steps, extras = predictions."""
    prefix = f"{tmp_path}/"
    xml = ipi_input(init=str(models["template"]), steps=STEPS, sockets_prefix=prefix, address="dce")
    argv = ["--template", str(models["template"]), "--energy", "tblite", "--dipole", str(models["dipole"]),
            "--polarizability", str(models["polarizability"]), "--unix", "--address", "dce",
            "--sockets-prefix", prefix, "--timeout", "60", "--std-every", "1"]  # this input writes them every step
    with _start_server(tmp_path, xml) as server, \
            process(client_command(argv), tmp_path, tmp_path / "client.log") as client:
        assert wait(client) == 0, (tmp_path / "client.log").read_text()
        assert wait(server) == 0, (tmp_path / "ipi.log").read_text()[-2000:]
    _check_recorded(tmp_path, calculator, _template(models))
    assert not (tmp_path / "dce").exists(), "socket file left behind"


def _template(models):
    from ase.io import read

    return read(models["template"])


def test_tcp_run_with_mdplugin_ipi(tmp_path, models, calculator):
    """``mdplugin ipi --address 127.0.0.1 --port P`` started *before* the server: it waits and serves."""
    port = free_port()
    xml = ipi_input(init=str(models["template"]), steps=STEPS, mode="inet", address="127.0.0.1", port=port)
    argv = ["--template", str(models["template"]), "--energy", "tblite", "--dipole", str(models["dipole"]),
            "--polarizability", str(models["polarizability"]), "--address", "127.0.0.1", "--port", str(port),
            "--std-every", "1"]
    with process(client_command(argv), tmp_path, tmp_path / "client.log") as client:
        time.sleep(1.0)
        with _start_server(tmp_path, xml) as server:
            assert wait(client) == 0, (tmp_path / "client.log").read_text()
            assert wait(server) == 0, (tmp_path / "ipi.log").read_text()[-2000:]
    _check_recorded(tmp_path, calculator, _template(models))


def test_path_integral_four_beads_with_ipi_py_driver(tmp_path, models, calculator):
    """A 4-bead PIMD run served by ``i-pi-py_driver -m custom -P drivers/mdplugin_driver.py`` on a
    UNIX socket, in i-PI's batch mode (2 beads per message), completes, with one extras file per
    bead, each matching its bead's positions."""
    prefix = f"{tmp_path}/"
    steps = 5
    xml = ipi_input(init=str(models["template"]), steps=steps, nbeads=4, sockets_prefix=prefix, address="pi",
                    batch_size=2)
    params = (f"template={models['template']},energy=tblite,dipole={models['dipole']},"
              f"polarizability={models['polarizability']}")
    argv = ["-u", "-a", "pi", "-S", prefix, "-m", "custom", "-P", str(DRIVER_FILE), "-o", params]
    with _start_server(tmp_path, xml) as server:
        # the bare i-PI driver does not wait for the server: start it once the socket exists
        wait_for((tmp_path / "pi").exists, 90, "i-PI to open its socket", server)
        with process(client_command(argv, kind="i-pi-py_driver"), tmp_path, tmp_path / "client.log") as client:
            assert wait(client) == 0, (tmp_path / "client.log").read_text()
            assert wait(server) == 0, (tmp_path / "ipi.log").read_text()[-2000:]
    assert sorted(p.name for p in tmp_path.glob("sim.dipole_*")) == [f"sim.dipole_{b}" for b in range(4)]
    template = _template(models)
    beads = [ipi.read_trajectory(str(tmp_path / f"sim.pos_{b}.extxyz"))[-1].positions for b in range(4)]
    assert min(np.abs(beads[0] - beads[b]).max() for b in range(1, 4)) > 1e-4, "beads are not distinct"
    for b in range(4):
        _check_recorded(tmp_path, calculator, template, bead=b, min_frames=steps)


# ----------------------------------------------------------------------------------------------
# how the client ends
# ----------------------------------------------------------------------------------------------
def _mdplugin(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("mdplugin")), "ipi", *args]


def test_no_server_is_a_one_line_error(tmp_path, models):
    """``mdplugin ipi`` with nobody listening: waits --timeout seconds, then one line and status != 0."""
    t0 = time.monotonic()
    result = subprocess.run(_mdplugin("--template", str(models["template"]), "--energy", "tblite", "--unix",
                                      "--address", "nobody", "--sockets-prefix", f"{tmp_path}/", "--timeout", "2"),
                            capture_output=True, text=True, timeout=300, env=env())
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdplugin: error: no i-PI server answered"), result.stderr
    assert "within the timeout" in lines[0]
    assert time.monotonic() - t0 >= 2.0


def test_no_tcp_server_and_silent_server_time_out(models, monkeypatch):
    """Same on TCP (in-process), and a server that accepts but never speaks also times out; the
    timeout counts from when the PES is ready (models loaded, template evaluated)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    options = {"template": str(models["template"]), "calculator": "tests.support.ipi_calculators:springs_with_dipole"}
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(IPIConnectionError, match=f"no i-PI server answered at 127.0.0.1:{port} within the timeout"):
        run_client(options, address="127.0.0.1", port=port, timeout=0.5)
    assert time.monotonic() - t0 >= 0.5
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with pytest.raises(IPIConnectionError, match="sent nothing within the timeout"):
            run_client(options, address="127.0.0.1", port=port, timeout=0.5)
    with pytest.raises(ConfigError, match="needs a port"):
        run_client(options, address="127.0.0.1")


def test_server_killed_mid_run_is_a_one_line_error(tmp_path, models):
    prefix = f"{tmp_path}/"
    xml = ipi_input(init=str(models["template"]), steps=100000, sockets_prefix=prefix, address="victim",
                    extras=False)
    argv = ["--template", str(models["template"]), "--energy", "tblite", "--unix", "--address", "victim",
            "--sockets-prefix", prefix]
    out = tmp_path / "sim.out"
    try:
        with _start_server(tmp_path, xml) as server, \
                process(_mdplugin(*argv), tmp_path, tmp_path / "client.log") as client:
            wait_for(lambda: out.exists() and len(out.read_text().splitlines()) > 15, 90, "some MD steps", client)
            os.killpg(server.pid, signal.SIGKILL)
            status = wait(client, timeout=30)
        log = (tmp_path / "client.log").read_text().strip().splitlines()
        assert status != 0
        assert log[-1].startswith("mdplugin: error:") and "closed the connection mid-run" in log[-1], log
        assert sum(line.startswith("mdplugin: error") or "Traceback" in line for line in log) == 1
    finally:
        (tmp_path / "victim").unlink(missing_ok=True)  # a killed i-PI leaves its socket file


# ----------------------------------------------------------------------------------------------
# the examples
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["nvt", "pimd"])
def test_example_inputs_are_valid_ipi_inputs(case):
    """examples/ipi/<case>/input.xml: i-PI parses it; it records dipoles and polarizabilities as
    extras, uses the socket that run.sh and the README serve, and starts from the shared template."""
    import xml.etree.ElementTree as ET

    from ipi.inputs.simulation import InputSimulation
    from ipi.utils.io.inputs import io_xml

    folder = Path(__file__).resolve().parents[2] / "examples" / "ipi"
    path = folder / case / "input.xml"
    with open(path) as handle:
        InputSimulation().parse(io_xml.xml_parse_file(handle).fields[0][1])
    root = ET.parse(path).getroot()
    extras = {t.get("extra_type") for t in root.iter("trajectory") if t.text.strip() == "extras"}
    assert {"dipole", "polarizability"} <= extras
    socket_ = root.find("ffsocket")
    assert socket_.get("pbc") == "false" and socket_.find("address").text.strip() == f"mdplugin-{case}"
    init = root.find("system/initialize")
    assert (path.parent / init.find("file").text.strip()).resolve() == folder / "dce.xyz"
    assert (int(init.get("nbeads")) > 1) == (case == "pimd")
    assert "mdplugin-$case" in (folder / "run.sh").read_text()
