"""`mdplugin label` end to end: the written file reads back with every label; errors are one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.cli.parser import main
from mdplugin.structures.data import read_dataset
from mdplugin.oracles.label import label_frames

from ..conftest import dichloroethane


def _mdplugin(*args: str) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter (slow to start: used once)."""
    return subprocess.run([sys.executable, "-m", "mdplugin", *args],
                          capture_output=True, text=True, timeout=600)


def _assert_one_line_error(capsys, args: list[str], *fragments: str) -> str:
    """``mdplugin ARGS`` (in-process, same code path as the console script) fails in one line."""
    status = main(args)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mdplugin: error:")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def structures(tmp_path):
    frames = [molecule("H2O"), dichloroethane(rng=1, noise=0.05), molecule("CH4")]
    frames[0].info["energy"] = 123.0  # stale labels in the input are ignored
    path = tmp_path / "in.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path, frames


def test_label_writes_all_four_properties(structures, tmp_path):
    path, frames = structures
    out = tmp_path / "out.xyz"
    proc = _mdplugin("label", str(path), "-o", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    data = read_dataset(out)
    assert data.properties == ["energy", "forces", "dipole", "polarizability"]
    assert len(data) == 3
    for got, want in zip(data.frames, frames):  # input order is kept
        np.testing.assert_array_equal(got.numbers, want.numbers)
        np.testing.assert_allclose(got.positions, want.positions, atol=1e-6)
    direct = label_frames(frames, "tblite")
    np.testing.assert_allclose(data.energy, direct.energy, atol=1e-6)
    np.testing.assert_allclose(data.dipole, direct.dipole, atol=1e-6)
    np.testing.assert_allclose(data.polarizability, direct.polarizability, atol=1e-5)
    for f_got, f_want in zip(data.forces, direct.forces):
        np.testing.assert_allclose(f_got, f_want, atol=1e-6)
    assert data.energy[0] != 123.0
    np.testing.assert_allclose(data.polarizability, np.swapaxes(data.polarizability, 1, 2))


def test_label_subset_of_properties(structures, tmp_path):
    path, _ = structures
    out = tmp_path / "out.xyz"
    assert main(["label", str(path), "-o", str(out), "--properties", "energy,dipole", "--quiet"]) == 0
    assert read_dataset(out).properties == ["energy", "dipole"]


def test_failed_frame_is_named(tmp_path, capsys):
    frames = [molecule("H2O"), Atoms("OgH", positions=[[0, 0, 0], [0, 0, 1.6]]), molecule("CH4")]
    path = tmp_path / "bad.xyz"
    ase.io.write(path, frames, format="extxyz")
    out = tmp_path / "out.xyz"
    _assert_one_line_error(capsys, ["label", str(path), "-o", str(out), "--quiet"],
                           str(path), "frame 1", "tblite")
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("args, fragments", [
    (["--oracle", "vasp"], ["unknown oracle", "vasp"]),
    (["--properties", "energy,charges"], ["unknown property", "charges"]),
])
def test_bad_options(structures, tmp_path, capsys, args, fragments):
    path, _ = structures
    _assert_one_line_error(capsys, ["label", str(path), "-o", str(tmp_path / "o.xyz"), *args],
                           *fragments)


def test_missing_or_broken_input(tmp_path, capsys):
    missing = tmp_path / "nope.xyz"
    _assert_one_line_error(capsys, ["label", str(missing), "-o", str(tmp_path / "o.xyz")],
                           str(missing))
    clash = tmp_path / "clash.xyz"
    ase.io.write(clash, Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]]), format="extxyz")
    _assert_one_line_error(capsys, ["label", str(clash), "-o", str(tmp_path / "o.xyz")],
                           str(clash), "frame 0")


def test_label_under_mpi_matches_serial(structures, tmp_path):
    """`mpiexec -n 2 mdplugin label` shares the frames across ranks and writes the same file."""
    pytest.importorskip("mpi4py")
    bindir = str(Path(sys.executable).parent)
    mpiexec = shutil.which("mpiexec", path=bindir) or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not available")
    path, frames = structures
    out = tmp_path / "mpi.xyz"
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "mdplugin", "label", str(path),
                           "-o", str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = read_dataset(out)
    serial = label_frames(frames, "tblite")
    np.testing.assert_allclose(data.energy, serial.energy, atol=1e-6)
    np.testing.assert_allclose(data.polarizability, serial.polarizability, atol=1e-5)


def test_label_takes_the_oracle_specs_of_active(tmp_path, monkeypatch, capsys):
    """`label --oracle` accepts `tblite:GFN1-xTB` and `module:function` (a module of the current
    folder too), as `active --oracle` does; it used to know only tblite and pyscf."""
    path = tmp_path / "one.xyz"
    ase.io.write(path, dichloroethane())
    (tmp_path / "my_label_oracle.py").write_text(
        "from mdplugin.oracles.label import make_oracle\n\ndef make():\n    return make_oracle('tblite', method='GFN1-xTB')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    energies = {}
    for name, oracle in (("gfn2", "tblite"), ("gfn1", "tblite:GFN1-xTB"), ("factory", "my_label_oracle:make")):
        out = tmp_path / f"{name}.xyz"
        assert main(["label", str(path), "-o", str(out), "--oracle", oracle, "--properties", "energy", "--quiet"]) == 0
        energies[name] = read_dataset(out, properties=["energy"]).energy[0]
    assert energies["gfn1"] == pytest.approx(energies["factory"], abs=1e-8)
    assert abs(energies["gfn1"] - energies["gfn2"]) > 1.0  # another method, another total energy (eV)
