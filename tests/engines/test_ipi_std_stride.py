"""The i-PI client computes the uncertainties only on the steps i-PI writes them.

``mdplugin ipi --std-every N`` (default 10, the stride of the ``*_std`` outputs of examples/ipi)
computes the ``*_std`` extras with the first structure and every N-th after it, and sends NaN for
them on the others (the keys stay: i-PI wants the same keys from every bead): a real i-PI NVT run
whose input writes them every 10 steps records the models' uncertainties at the recorded
positions; a misaligned stride records NaN, never stale values.
"""

from __future__ import annotations

import json

import ipi
import numpy as np
import pytest

from mdplugin.core.errors import ConfigError
from mdplugin.core.units import BOHR
from mdplugin.engines.ipi import MdpluginDriver

from ..support.ipi_utils import client_command, ipi_input, process, wait
from .test_ipi import _start_server, _template, calculator, models  # noqa: F401 (fixtures)

STEPS = 25


def test_pes_sends_the_uncertainties_every_nth_structure(models) -> None:  # noqa: F811
    driver = MdpluginDriver(template=str(models["template"]), energy="tblite", dipole=str(models["dipole"]),
                            polarizability=str(models["polarizability"]), std_every=10)
    atoms = _template(models)
    rng = np.random.default_rng(0)
    with_std = []
    for i in range(25):
        pos = (atoms.positions + rng.normal(scale=0.01, size=atoms.positions.shape)) / BOHR
        extras = json.loads(driver.compute_structure(np.eye(3) * 20 / BOHR, pos)[3])
        assert "dipole" in extras and "polarizability" in extras  # the values: always
        assert {"dipole_std", "polarizability_std"} <= set(extras)  # the same keys every time
        computed = np.isfinite(extras["dipole_std"]).all()
        assert computed == np.isfinite(extras["polarizability_std"]).all()
        if computed:
            with_std.append(i)
        else:
            assert np.isnan(extras["dipole_std"]).all() and np.isnan(extras["polarizability_std"]).all()
    assert with_std == [0, 10, 20]
    every = MdpluginDriver(template=str(models["template"]), energy="tblite", dipole=str(models["dipole"]))
    assert all("dipole_std" in json.loads(every.compute_structure(np.eye(3), atoms.positions / BOHR)[3])
               for _ in range(3))  # the Python default: every structure
    for bad in (-1, 2.5, "often"):
        with pytest.raises(ConfigError, match="std_every"):
            MdpluginDriver(template=str(models["template"]), energy="tblite", std_every=bad)


def _run(tmp_path, models, std_stride, argv_extra=()):  # noqa: F811
    prefix = f"{tmp_path}/"
    xml = ipi_input(init=str(models["template"]), steps=STEPS, sockets_prefix=prefix, address="dce",
                    std_stride=std_stride)
    argv = ["--template", str(models["template"]), "--energy", "tblite", "--dipole", str(models["dipole"]),
            "--polarizability", str(models["polarizability"]), "--unix", "--address", "dce",
            "--sockets-prefix", prefix, "--timeout", "60", *argv_extra]
    with _start_server(tmp_path, xml) as server, \
            process(client_command(argv), tmp_path, tmp_path / "client.log") as client:
        return wait(client), wait(server)


def test_default_stride_matches_an_input_writing_them_every_10_steps(tmp_path, models, calculator) -> None:  # noqa: F811
    client, server = _run(tmp_path, models, std_stride=10)
    assert client == 0, (tmp_path / "client.log").read_text()
    assert server == 0, (tmp_path / "ipi.log").read_text()[-2000:]
    frames = ipi.read_trajectory(str(tmp_path / "sim.pos_0.extxyz"))
    std = ipi.read_trajectory(str(tmp_path / "sim.std_0"), format="extras")
    recorded = std["dipole_std,polarizability_std"]
    assert len(recorded) == 3  # steps 0, 10, 20
    template = _template(models)
    for k, values in enumerate(recorded):  # fresh values: the uncertainties at the written positions
        atoms = template.copy()
        atoms.positions = frames[10 * k].positions
        mu_std = np.ravel(calculator.get_property("dipole_std", atoms)) / BOHR
        alpha_std = np.ravel(calculator.get_property("polarizability_std", atoms)) / BOHR**3
        np.testing.assert_allclose(values[:3], mu_std, rtol=0, atol=1e-6 * np.abs(mu_std).max())
        np.testing.assert_allclose(values[3:], alpha_std, rtol=0, atol=1e-6 * np.abs(alpha_std).max())


def test_a_misaligned_stride_records_nan_not_stale_values(tmp_path, models) -> None:  # noqa: F811
    client, server = _run(tmp_path, models, std_stride=1)  # written every step, computed every 10th
    assert client == 0, (tmp_path / "client.log").read_text()
    assert server == 0, (tmp_path / "ipi.log").read_text()[-2000:]
    recorded = np.asarray(ipi.read_trajectory(str(tmp_path / "sim.std_0"), format="extras")["dipole_std,polarizability_std"])
    finite = np.isfinite(recorded).all(axis=1)
    assert list(np.flatnonzero(finite)) == [0, 10, 20] and np.isnan(recorded[~finite]).all()
