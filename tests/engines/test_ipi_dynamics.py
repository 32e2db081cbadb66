"""Real i-PI dynamics through mdplugin's client: NVE of a molecule and of a periodic box conserve
i-PI's conserved energy (the forces the PES sends are the gradient of the energy it sends, in i-PI's
units, and continuous when atoms cross the cell wall), and in an NPT run of a periodic box the virial
i-PI uses is −σV of the calculator at every recorded step (i-PI's ``virial_md`` = −σ)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

import ipi
from mdplugin.core.units import BOHR, HARTREE
from mdplugin.engines.ase import MLCalculator
from mdplugin.engines.ipi import PES_FILE, Barostat, Thermostat, input_xml
from mdplugin.models import build

from ..conftest import dichloroethane
from ..models.test_contract import labels, periodic_box
from ..support.ipi_utils import client_command, process, wait, wait_for
from .test_md import elastic_network

#: eV/Å³ -> Hartree/bohr³
AU_PRESSURE = BOHR**3 / HARTREE


def _ipi_input(*, init: str, address: str, prefix: str, steps: int, ensemble: str, pbc: bool,
               properties: tuple = (), **settings) -> str:
    """An NVE/NPT input, everything written every step, the centre-of-mass motion left alone (fixcom off)."""
    return input_xml(init=init, steps=steps, socket=address, sockets_prefix=prefix, ensemble=ensemble, pbc=pbc,
                     seed=4242, fixcom=False, extras=(), safe_stride=100000,
                     properties=("step", "conserved", "potential", "kinetic_md", *properties), **settings)


def _run_ipi(folder, xml: str, client: list[str], address: str, kind: str = "mdplugin") -> None:
    (folder / "input.xml").write_text(xml)
    with process(["i-pi", "input.xml"], folder, folder / "ipi.log", timeout=600) as server:
        if kind != "mdplugin":  # i-PI's bare driver does not wait: start it once the socket exists
            wait_for((folder / address).exists, 120, "i-PI to open its socket", server)
        with process(client_command(client, kind=kind), folder, folder / "client.log", timeout=600) as proc:
            assert wait(proc) == 0, (folder / "client.log").read_text()[-3000:]
            assert wait(server) == 0, (folder / "ipi.log").read_text()[-3000:]


def _output(folder) -> np.ndarray:
    return np.loadtxt(folder / "sim.out", ndmin=2)


@pytest.fixture(scope="module")
def molecule_model(tmp_path_factory):
    """A SOAP energy model of 1,2-dichloroethane (elastic-network labels), saved."""
    frames = [dichloroethane(i, 0.06) for i in range(40)]
    y = [elastic_network(a) for a in frames]
    model = build("soap", n_sparse=40, energy_noise=1e-4, force_noise=1e-3).fit(
        frames, {"energy": [e for e, _ in y], "forces": [f for _, f in y]})
    path = tmp_path_factory.mktemp("molecule") / "energy.npz"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def box_model(tmp_path_factory):
    """A SOAP energy model of periodic C2H2O2 boxes (cells smaller than twice the cutoff), saved."""
    frames = [periodic_box(i) for i in range(16)]
    y = [labels(a) for a in frames]
    model = build("soap", n_sparse=16, cutoff=3.5, max_radial=3, max_angular=2).fit(
        frames, {"energy": [t["energy"] for t in y], "forces": [t["forces"] for t in y]})
    path = tmp_path_factory.mktemp("box") / "energy.npz"
    model.save(path)
    return path


def _conserved_drift(folder, n_atoms: int) -> tuple[float, float]:
    """(max |conserved − conserved₀| per atom, mean kinetic energy per atom), eV."""
    out = _output(folder)
    conserved, kinetic = out[:, 1] * HARTREE, out[:, 3] * HARTREE
    return float(np.abs(conserved - conserved[0]).max() / n_atoms), float(kinetic.mean() / n_atoms)


def _nve(folder, start, model, steps: int, pbc: bool) -> tuple[float, float]:
    """An i-PI NVE run of ``start`` served by ``mdplugin ipi`` with the energy ``model``;
    :func:`_conserved_drift` of it."""
    write(folder / "start.xyz", start)
    xml = _ipi_input(init=str(folder / "start.xyz"), address="nve", prefix=f"{folder}/", steps=steps,
                     ensemble="nve", pbc=pbc)
    _run_ipi(folder, xml, ["--template", str(folder / "start.xyz"), "--energy", str(model),
                           "--unix", "--address", "nve", "--sockets-prefix", f"{folder}/"], "nve")
    return _conserved_drift(folder, len(start))


def test_nve_of_a_molecule_conserves_energy(tmp_path, molecule_model):
    start = dichloroethane(rng=7, noise=0.03)
    start.cell, start.pbc = [30.0, 30.0, 30.0], False
    drift, kinetic = _nve(tmp_path, start, molecule_model, steps=200, pbc=False)
    assert kinetic > 5e-3  # ~300 K: the atoms move (measured 0.036 eV/atom)
    # measured 0.19 meV/atom (velocity Verlet, 0.5 fs, stiff C-H springs); forces off by any unit
    # factor would move it by the kinetic energy's scale
    assert drift < 1e-3, f"conserved energy moved by {drift * 1e3:.3f} meV/atom"


def test_nve_of_a_periodic_box_conserves_energy_across_the_wall(tmp_path, box_model):
    """i-PI wraps the positions it sends (pbc='true'): atoms jump to the other side of the cell
    between requests, and the energy stays conserved."""
    start = periodic_box(123)
    start.positions -= [0.45, 0.45, 0.45]  # atoms within ~0.2 Å of three cell faces
    start.wrap()
    drift, kinetic = _nve(tmp_path, start, box_model, steps=300, pbc=True)
    assert kinetic > 5e-3
    assert drift < 2e-4, f"conserved energy moved by {drift * 1e3:.3f} meV/atom"  # measured 0.003
    frames = ipi.read_trajectory(str(tmp_path / "sim.pos_0.extxyz"))
    scaled = np.array([np.linalg.solve(start.cell.array.T, f.positions.T).T for f in frames])
    assert np.any((scaled < 0) | (scaled >= 1), axis=(0, 2)).sum() >= 2, "no atom crossed the cell wall"


def _cu_crystal(path) -> None:
    atoms = bulk("Cu", "fcc", a=3.52, cubic=True).repeat((2, 2, 2))  # compressed: a positive pressure
    atoms.rattle(0.02, seed=3)
    write(path, atoms)


@pytest.mark.parametrize("calculator", ["EMT", "ML"])
def test_npt_virial_is_minus_stress_times_volume(tmp_path, calculator, box_model):
    """NPT with a barostat: i-PI's virial_md (its virial / V, atomic units) equals −σ of the
    calculator at every recorded structure and cell, and the cell changes. EMT (ASE's reference
    calculator with a stress) through ``i-pi-py_driver -P PES_FILE -o calculator=...``; the ML
    energy model through ``mdplugin ipi`` once it gives a stress."""
    if calculator == "EMT":
        from ase.calculators.emt import EMT

        template = tmp_path / "cu.xyz"
        _cu_crystal(template)
        reference = EMT()
        client = ["-u", "-a", "npt", "-S", f"{tmp_path}/", "-m", "custom", "-P", PES_FILE,
                  "-o", f"template={template},calculator=ase.calculators.emt:EMT"]
        kind = "i-pi-py_driver"
    else:
        reference = MLCalculator(energy=str(box_model))
        if "stress" not in reference.implemented_properties:
            pytest.skip("the ML energy model gives no stress yet (the condensed-phase engine adds it)")
        template = tmp_path / "box.xyz"
        write(template, periodic_box(123))
        client = ["--template", str(template), "--energy", str(box_model), "--unix", "--address", "npt",
                  "--sockets-prefix", f"{tmp_path}/"]
        kind = "mdplugin"
    langevin = Thermostat("langevin", 50.0)
    xml = _ipi_input(init=str(template), address="npt", prefix=f"{tmp_path}/", steps=30, ensemble="npt", pbc=True,
                     barostat=Barostat("isotropic", tau_fs=20.0, thermostat=langevin), thermostat=langevin,
                     properties=("virial_md", "volume"))
    (tmp_path / "input.xml").write_text(xml)
    _run_ipi(tmp_path, xml, client, "npt", kind=kind)
    out = _output(tmp_path)
    virial_md, volume = out[:, 4:10], out[:, 10]
    frames = ipi.read_trajectory(str(tmp_path / "sim.pos_0.extxyz"))
    assert len(frames) == len(out) >= 31
    assert np.ptp(volume) > 1e-3 * volume[0], "the cell did not change: not an NPT run"
    for frame, vir in zip(frames, virial_md):
        atoms = frame.copy()
        atoms.pbc = True
        atoms.calc = reference
        sigma = atoms.get_stress(voigt=False) * AU_PRESSURE  # Hartree/bohr³
        expected = -sigma[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]  # i-PI's order xx yy zz xy xz yz
        # i-PI writes ~9 significant digits: components near zero are compared on the largest's scale
        np.testing.assert_allclose(vir, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert np.abs(virial_md).max() > 1e-6, "no virial: the PES sent zeros"
