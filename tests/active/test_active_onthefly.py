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

