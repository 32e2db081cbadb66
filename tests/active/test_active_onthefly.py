"""On the fly: the i-PI client's PES serving an :class:`~mdplugin.active.ActiveCalculator`
labels the structures its models are unsure of and answers with the oracle's values there."""

from __future__ import annotations

import numpy as np
import pytest

from mdplugin.active import structure_hash

from .helpers import _keys, _run, _start_file, toy_oracle, water


def test_ipi_driver_with_active_calculator_labels_unsure_structures(tmp_path):
    from mdplugin.active import ActiveCalculator
    from mdplugin.engines.ipi import MdpluginDriver
    from mdplugin.core.units import BOHR, HARTREE

    _run(tmp_path, steps=0, max_calls=2)  # initial frames and models only
    run_dir = tmp_path / "run"
    n0 = len(_keys(run_dir))
    template = _start_file(tmp_path)
    calc = ActiveCalculator(run_dir, oracle=toy_oracle(), say=lambda m: None)
    driver = MdpluginDriver(template=str(template), calculator=calc)
    far = water()
    far.positions[1] *= 1.15  # a stretched bond: outside the initial data
    energy, forces, _, extras = driver.compute_structure(np.eye(3) * 20 / BOHR, far.positions / BOHR)
    keys = _keys(run_dir)
    assert len(keys) >= n0 + 1 and structure_hash(far) in keys
    far.calc = toy_oracle()  # the labelled structure gets the oracle's values
    assert energy * HARTREE == pytest.approx(far.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(forces * HARTREE / BOHR, far.get_forces(), atol=1e-7)
    # a structure the models are sure of is not labelled; the budget caps the labels
    for shift in np.linspace(0.0, 0.4, 6):
        x = water()
        x.positions[2] *= 1.0 + shift
        driver.compute_structure(np.eye(3) * 20 / BOHR, x.positions / BOHR)
    assert len(_keys(run_dir)) <= n0 + 2



def test_mdplugin_ipi_active_learns_during_a_real_ipi_run(tmp_path, monkeypatch):
    """``mdplugin ipi --active RUN_DIR`` against a real i-PI server: i-PI's driver builds the
    ActiveCalculator of the run folder, labels structures with the run's oracle during the NVT run
    (data.xyz grows, within the call budget), and the run ends normally."""
    import os

    from mdplugin.active import run_active

    from ..support.ipi_utils import client_command, ipi_input, process, wait
    from .helpers import ROOT, _config

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    run_dir = tmp_path / "run"
    run_active(water(), run_dir, _config(steps=0, max_calls=3), oracle="tests.active.helpers:toy_oracle",
               say=lambda m: None)  # initial labels and models only; the oracle saved by name
    n0 = len(_keys(run_dir))
    start = water()
    start.cell = [15.0, 15.0, 15.0]
    start.center()
    start.write(tmp_path / "start.xyz")
    prefix = f"{tmp_path}/"
    (tmp_path / "input.xml").write_text(ipi_input(init=str(tmp_path / "start.xyz"), steps=30, sockets_prefix=prefix,
                                                  address="otf", extras=False, temperature=600.0))
    argv = ["--template", str(tmp_path / "start.xyz"), "--active", str(run_dir), "--unix", "--address", "otf",
            "--sockets-prefix", prefix]
    with process(["i-pi", "input.xml"], tmp_path, tmp_path / "ipi.log") as server, \
            process(client_command(argv), tmp_path, tmp_path / "client.log") as client:
        assert wait(client) == 0, (tmp_path / "client.log").read_text()[-3000:]
        assert wait(server) == 0, (tmp_path / "ipi.log").read_text()[-3000:]
    keys = _keys(run_dir)
    assert n0 < len(keys) <= n0 + 3 and len(keys) == len(set(keys))
    assert "label written" in (tmp_path / "client.log").read_text()
