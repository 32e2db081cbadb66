"""Simulations that go wrong: MD stops with a clear message and the trajectory so far stays readable.

Faults are injected through the public API: an ASE calculator (alone, or in MLCalculator's energy
slot next to a dipole model) that returns NaN forces after N evaluations, or pushes one atom away
from the molecule; a dipole model whose uncertainty grows without bound.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

from mdplugin.engines.ase import MLCalculator
from mdplugin.cli.parser import main
from mdplugin.structures.data import read_dataset
from mdplugin.core.errors import SimulationError
from mdplugin.engines.md import LOST_ATOM_DISTANCE, run_md
from mdplugin.models.base import Model, build, register
from mdplugin.spectra.readers import read_series

from ..conftest import dichloroethane
from .helpers import one_error_line


class Springs(Calculator):
    """Harmonic springs (k eV/Å²) to the reference positions; NaN forces after ``nan_after`` calls;
    a constant force ``push`` (eV/Å, along +x) on atom ``pushed``, which has no spring."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, ref, k=20.0, nan_after=None, push=0.0, pushed=4):
        super().__init__()
        self.ref, self.k, self.nan_after, self.push, self.pushed = ref.copy(), k, nan_after, push, pushed
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        d = self.atoms.positions - self.ref
        if self.push:
            d[self.pushed] = 0.0
        forces = -self.k * d
        energy = 0.5 * self.k * float((d**2).sum())
        if self.push:
            forces[self.pushed, 0] += self.push
            energy -= self.push * (self.atoms.positions[self.pushed, 0] - self.ref[self.pushed, 0])
        if self.nan_after is not None and self.calls > self.nan_after:
            forces[2, 1] = np.nan
        self.results = {"energy": energy, "forces": forces}


@register("_robust_growing_std")
class GrowingStdDipole(Model):
    """Dipole = Σ q r with fixed charges; its std (e·Å) grows with the distance from the training
    structure: ``scale`` × max |Δr|, so MD away from the start becomes 'uncertain'."""

    targets_supported = ("dipole",)

    def __init__(self, target="dipole", scale=100.0):
        self.target = target
        self.scale = scale

    def fit(self, frames, targets=None, *, comm=None):
        self.ref_ = frames[0].positions.copy()
        self.charges_ = np.where(frames[0].numbers == 1, 0.1, -0.1)
        self.species_ = np.unique(frames[0].numbers)
        self.is_fitted_ = True
        return self

    def predict(self, frames, return_std=False):
        y = np.array([self.charges_ @ a.positions for a in frames])
        if not return_std:
            return y
        std = np.array([[self.scale * np.abs(a.positions - self.ref_).max()] * 3 for a in frames])
        return y, std

    def _get_state(self):
        return {"ref": self.ref_, "charges": self.charges_}

    def _set_state(self, arrays):
        self.ref_, self.charges_ = arrays["ref"], arrays["charges"]


def _start():
    atoms = dichloroethane(rng=3, noise=0.02)
    return atoms


def _dipole_model():
    return build("_robust_growing_std").fit([_start()], np.zeros((1, 3)))


@pytest.mark.parametrize("wrapped", [False, True], ids=["ase-calculator", "MLCalculator"])
def test_nan_forces_stop_md_and_keep_the_trajectory(tmp_path, wrapped):
    start = _start()
    springs = Springs(start.positions, nan_after=12)
    calc = MLCalculator(energy=springs, dipole=_dipole_model()) if wrapped else springs
    out = tmp_path / "traj.xyz"
    with pytest.raises(SimulationError) as err:
        run_md(start, calc, steps=50, dt_fs=0.5, output=out, temperature_K=300, progress=False)
    assert "non-finite" in str(err.value)
    data = read_dataset(out, properties=["energy", "forces"] + (["dipole"] if wrapped else []))
    assert 5 <= len(data) <= 12  # every frame before the fault, each complete
    assert all(np.all(np.isfinite(f)) for f in data.forces)
    if wrapped:
        assert read_series(out, "dipole").shape == (len(data), 3)  # ready for `mdplugin spectrum`


def test_nan_forces_message_names_the_step(tmp_path):
    start = _start()
    calc = MLCalculator(energy=Springs(start.positions, nan_after=12), dipole=_dipole_model())
    with pytest.raises(SimulationError, match=r"step \d+"):
        run_md(start, calc, steps=50, dt_fs=0.5, output=tmp_path / "t.xyz", temperature_K=300, progress=False)


def test_atom_flying_away_stops_md(tmp_path):
    start = _start()
    calc = Springs(start.positions, push=30.0, pushed=4)  # an H atom pushed along +x at 30 eV/Å
    out = tmp_path / "traj.xyz"
    with pytest.raises(SimulationError) as err:
        run_md(start, calc, steps=200, dt_fs=0.5, output=out, temperature_K=10, progress=False)
    msg = str(err.value)
    assert f"{LOST_ATOM_DISTANCE} Å from every other atom" in msg and "step" in msg and str(out) in msg
    data = read_dataset(out, properties=["energy", "forces"])
    assert 2 <= len(data) < 200
    last = data.frames[-1].positions
    gaps = np.linalg.norm(last[4] - np.delete(last, 4, axis=0), axis=1)
    assert gaps.min() <= LOST_ATOM_DISTANCE + 1e-9  # the written frames are the sane ones


def _uncertainty_keyword():
    params = inspect.signature(run_md).parameters
    names = [p for p in params if ("std" in p or "uncert" in p) and "temperature" not in p]
    return names[0] if names else None


def test_uncertainty_over_hard_limit_stops_md(tmp_path):
    key = _uncertainty_keyword()
    assert key is not None, "run_md has no uncertainty-limit parameter"
    start = _start()
    calc = MLCalculator(energy=Springs(start.positions), dipole=_dipole_model())
    out = tmp_path / "traj.xyz"
    with pytest.raises(SimulationError, match="uncertain"):
        run_md(start, calc, steps=100, dt_fs=0.5, output=out, temperature_K=300, progress=False, **{key: 1.0})
    assert len(read_dataset(out, properties=["dipole"])) >= 1


def test_md_command_bad_options_and_inputs(tmp_path, capsys):
    start = tmp_path / "start.xyz"
    _start().write(start)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (["--energy", broken], f"{broken}: not a valid model file"),
        (["--energy", tmp_path / "absent.npz"], "absent.npz: no such model file"),
        (["--energy", "tblite", "--steps", "-1"], "steps must be >= 0"),
        (["--energy", "tblite", "--dt", "0"], "time step must be positive"),
    ]
    for extra, message in cases:
        argv = ["md", start, "--steps", "2", "--dt", "0.5", "-o", tmp_path / "t.xyz", "--quiet"]
        for i in range(0, len(extra), 2):
            if extra[i] in argv:
                argv[argv.index(extra[i]) + 1] = extra[i + 1]
            else:
                argv += extra[i : i + 2]
        rc = main([str(a) for a in argv])
        line = one_error_line(capsys.readouterr().err)
        assert rc == 2 and message in line, (extra, line)
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    rc = main(["md", str(empty), "--energy", "tblite", "--steps", "2", "--dt", "0.5", "-o", str(tmp_path / "t.xyz")])
    assert rc == 2 and f"{empty}: file is empty" in one_error_line(capsys.readouterr().err)
