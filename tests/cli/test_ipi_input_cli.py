"""``mdplugin ipi-input``: the input it writes is the run asked for (read by i-PI's own reader), and
the ``mdplugin ipi`` command it prints serves it in a real i-PI run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
from ase.build import molecule
from ase.io import write
from ipi.engine.simulation import Simulation

from mdplugin.cli.parser import main

from ..support.ipi_utils import process, wait


def _water(folder: Path) -> Path:
    atoms = molecule("H2O")
    atoms.cell = [10.0, 10.0, 10.0]
    atoms.center()
    write(folder / "water.xyz", atoms)
    return folder / "water.xyz"


def test_written_input_is_the_run_asked_for(tmp_path, capsys):
    start = _water(tmp_path)
    out = tmp_path / "trpmd.xml"
    assert main(["ipi-input", str(start), "-o", str(out), "--ensemble", "trpmd", "--beads", "4", "--steps", "50",
                 "--dt", "0.25", "--temperature", "200", "--unix", "--address", "w", "--every", "5"]) == 0
    printed = capsys.readouterr().out
    assert "--std-every 5" in printed and "--unix --address w" in printed
    sim = Simulation.load_from_xml(out.read_text(), custom_verbosity="quiet", read_only=True)
    system = sim.syslist[0]
    assert system.beads.nbeads == 4 and sim.tsteps == 50 and type(system.motion.thermostat).__name__ == "ThermoPILE_G"
    np.testing.assert_allclose(system.motion.dt * 0.0241888432658, 0.25, rtol=1e-6)
    strides = {o.filename: o.stride for o in sim.outtemplate}
    assert strides == {"out": 5, "pos": 5, "dipole": 1, "polarizability": 1, "std": 5}


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    start = _water(tmp_path)
    for argv, message in ((["--ensemble", "trpmd", "--unix"], "needs a ring polymer: n_beads > 1 (--beads)"),
                          (["--ensemble", "npt", "--unix"], "needs a periodic system (pbc=True, --pbc)"),
                          (["--pressure", "1", "--unix"], "--pressure goes with --ensemble npt, not nvt"),
                          ([], "give --port for a TCP socket, or --unix")):
        assert main(["ipi-input", str(start), "-o", str(tmp_path / "x.xml"), "--steps", "5", "--address", "a",
                     *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.xml").exists()


def test_printed_client_serves_the_input(tmp_path, capsys):
    """i-PI runs the written input to its end with the printed client (tblite energy, no extras)."""
    start = _water(tmp_path)
    prefix = f"{tmp_path}/"
    assert main(["ipi-input", str(start), "-o", str(tmp_path / "input.xml"), "--steps", "5", "--unix", "--address",
                 "cli", "--sockets-prefix", prefix, "--extras", "", "--every", "1"]) == 0
    client = shlex.split(capsys.readouterr().out.split("then  ")[1].strip())
    assert client[:2] == ["mdplugin", "ipi"]
    client = [str(Path(sys.executable).with_name("mdplugin")), *client[1:]]
    client[client.index("ENERGY")] = "tblite"
    with process(["i-pi", "input.xml"], tmp_path, tmp_path / "ipi.log") as server, \
            process(client, tmp_path, tmp_path / "client.log") as proc:
        assert wait(proc) == 0, (tmp_path / "client.log").read_text()[-2000:]
        assert wait(server) == 0, (tmp_path / "ipi.log").read_text()[-2000:]
    steps = np.loadtxt(tmp_path / "sim.out", ndmin=2)[:, 0]
    assert steps.tolist() == [0, 1, 2, 3, 4, 5]
