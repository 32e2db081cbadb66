"""Reading, validating and writing labelled data sets."""

import numpy as np
import pytest
from ase import Atoms

from mdplugin.structures.data import Dataset, read_dataset, write_dataset
from mdplugin.core.errors import DataError
from mdplugin.core.units import BOHR

from ..robustness.helpers import labelled as _labelled


def test_write_read_round_trip(tmp_path):
    data = _labelled()
    write_dataset(tmp_path / "d.xyz", data)
    back = read_dataset(tmp_path / "d.xyz")
    assert back.properties == ["energy", "forces", "dipole", "polarizability"]
    assert np.allclose(back.energy, data.energy)
    assert np.allclose(back.dipole, data.dipole)
    assert np.allclose(back.polarizability, data.polarizability)
    assert all(np.allclose(a, b) for a, b in zip(back.forces, data.forces))
    assert np.allclose(back.frames[1].positions, data.frames[1].positions)
    # append keeps earlier frames
    write_dataset(tmp_path / "d.xyz", data.subset([0]), append=True)
    assert len(read_dataset(tmp_path / "d.xyz")) == 4


def test_key_mapping_and_atomic_units(tmp_path):
    a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    a.info["mu"] = np.array([1.0, 0.0, 0.0])
    a.info["alpha"] = np.eye(3).ravel() * 10
    a.info["potential"] = -1.0
    (tmp_path / "w.xyz").write_text(
        '3\nLattice="0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0 0.0" Properties=species:S:1:pos:R:3 '
        'mu="1.0 0.0 0.0" alpha="10 0 0 0 10 0 0 0 10" potential=-1.0\n'
        "O 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"
    )
    d = read_dataset(tmp_path / "w.xyz", keys={"dipole": "mu", "polarizability": "alpha", "energy": "potential"},
                     units="atomic")
    assert np.allclose(d.dipole[0], [BOHR, 0, 0])
    assert np.allclose(d.polarizability[0], 10 * BOHR**3 * np.eye(3))
    assert np.isclose(d.energy[0], -27.211386, rtol=1e-6)
    # an all-zero Lattice is a molecule, not a periodic cell
    assert not d.frames[0].pbc.any()


def test_reads_tensoap_water(shared_data):
    d = read_dataset(shared_data / "tensoap-water" / "water_monomer.xyz",
                     keys={"dipole": "mu", "polarizability": "alpha"}, units="atomic", index=slice(0, 5))
    assert len(d) == 5 and d.dipole.shape == (5, 3) and d.polarizability.shape == (5, 3, 3)
    assert not d.frames[0].pbc.any()


def _write(tmp_path, text, name="bad.xyz"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = "2\nProperties=species:S:1:pos:R:3 dipole=\"0 0 1\"\nH 0 0 0\nH 0 0 0.74\n"


@pytest.mark.parametrize(
    "text, props, message",
    [
        (GOOD + "2\nProperties=species:S:1:pos:R:3\nH 0 0 0\nH 0 0 0.74\n", ["dipole"], "frame 1: missing key 'dipole'"),
        (GOOD.replace('"0 0 1"', '"0 1"'), ["dipole"], "frame 0: dipole (key 'dipole') has shape (2,)"),
        (GOOD.replace('"0 0 1"', '"0 nan 1"'), ["dipole"], "frame 0: dipole (key 'dipole') contains NaN"),
        (GOOD.replace("0 0 0.74", "0 0 0.05"), ["dipole"], "frame 0: atoms 0 and 1 are 0.05 Å apart"),
        (GOOD.replace("0 0 0.74", "0 inf 0.74"), ["dipole"], "frame 0: positions contain NaN or inf"),
        (GOOD + "2\nProperties=species:S:1:pos:R:3\nH 0 0 0\n", ["dipole"], "frame 1: cannot parse"),
        ("", ["dipole"], "file is empty"),
    ],
)
def test_bad_input_names_file_frame_and_problem(tmp_path, text, props, message):
    p = _write(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_dataset(p, properties=props)
    assert str(p) in str(err.value)
    assert message in str(err.value)


def test_missing_file_and_unknown_property(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path / "nope.xyz")
    p = _write(tmp_path, GOOD)
    with pytest.raises(DataError, match="unknown property 'dipol'"):
        read_dataset(p, properties=["dipol"])


def test_asymmetric_polarizability_is_refused(shared_data):
    with pytest.raises(DataError, match=r"not symmetric: max \|α-αᵀ\| = [0-9.]+ bohr³, 0.13 of its largest"):
        read_dataset(shared_data / "tensoap-water" / "asymmetry_asymmetric.xyz", properties=["polarizability"],
                     keys={"polarizability": "alpha"}, units="atomic")
    d = read_dataset(shared_data / "tensoap-water" / "asymmetry_symmetric.xyz", properties=["polarizability"],
                     keys={"polarizability": "alpha"}, units="atomic", index=slice(0, 3))
    assert d.frames[0].pbc.all()  # a real periodic cell stays periodic


def test_written_files_have_normal_permissions(tmp_path):
    import os
    import stat

    write_dataset(tmp_path / "d.xyz", _labelled(1))
    mode = stat.S_IMODE(os.stat(tmp_path / "d.xyz").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def _rounded_polarizabilities(tmp_path, relative: float, name: str = "rounded.xyz"):
    """Periodic water boxes whose polarizabilities (bohr³, key alpha) are symmetric only to
    ``relative`` of their largest component, as a public set prints them."""
    rng = np.random.default_rng(3)
    frames = []
    for k in range(4):
        a = Atoms("OH2", positions=[[1, 1, 1], [1.96, 1, 1], [0.76, 1.93, 1]], cell=[4.0, 4.1, 4.2], pbc=True)
        a.positions += rng.normal(scale=0.02, size=(3, 3))
        alpha = np.diag([9.0, 10.0, 11.0]) + rng.normal(scale=0.5, size=(3, 3))
        alpha = 0.5 * (alpha + alpha.T)
        noise = np.zeros((3, 3))
        noise[0, 1] = relative * np.abs(alpha).max() * (1.0 if k == 2 else 0.3)
        a.info["alpha"] = (alpha + noise).reshape(9)
        frames.append(a)
    import ase.io

    path = tmp_path / name
    ase.io.write(path, frames, format="extxyz")
    return path


def test_rounding_asymmetry_is_symmetrised_with_one_warning(tmp_path):
    from mdplugin.core.errors import DataWarning

    path = _rounded_polarizabilities(tmp_path, 7e-4)
    with pytest.warns(DataWarning) as record:
        data = read_dataset(path, properties=["polarizability"], keys={"polarizability": "alpha"}, units="atomic")
    assert len(record) == 1  # once per file, not once per frame
    text = str(record[0].message)
    assert str(path) in text and "bohr³" in text and "frame 2" in text and "symmetrised" in text
    np.testing.assert_array_equal(data.polarizability, np.swapaxes(data.polarizability, 1, 2))
    with pytest.raises(DataError, match=r"not symmetric: .* bohr³"):
        read_dataset(_rounded_polarizabilities(tmp_path, 5e-3, "worse.xyz"), properties=["polarizability"],
                     keys={"polarizability": "alpha"}, units="atomic")


def _trajectory(n: int = 6, quantum_at: int | None = 3, charge_jump_at: int | None = None):
    """A periodic water trajectory with small steps and a smooth dipole, with a jump of one
    polarization quantum e·a (or of 0.4 e·b) between two neighbouring frames."""
    cell = np.diag([5.0, 5.5, 6.0])
    frames, dipoles = [], []
    for k in range(n):
        a = Atoms("OH2", positions=np.array([[1, 1, 1], [1.96, 1, 1], [0.76, 1.93, 1]]) + 0.02 * k,
                  cell=cell, pbc=True)
        mu = np.array([0.3, 0.1, -0.2]) + 0.01 * k
        if quantum_at is not None and k >= quantum_at:
            mu = mu + cell[0]
        if charge_jump_at is not None and k >= charge_jump_at:
            mu = mu + 0.4 * cell[1]
        frames.append(a)
        dipoles.append(mu)
    return Dataset(frames=frames, dipole=np.array(dipoles))


def test_dipole_jump_by_a_quantum_names_the_frames(tmp_path):
    write_dataset(tmp_path / "jump.xyz", _trajectory())
    with pytest.raises(DataError, match=r"jump.xyz: frames 2 and 3: the dipole jumps by \(\+1, \+0, \+0\) "
                                        r"polarization quanta .* continuous in time"):
        read_dataset(tmp_path / "jump.xyz")
    write_dataset(tmp_path / "wrap.xyz", _trajectory(quantum_at=None, charge_jump_at=4))
    with pytest.raises(DataError, match=r"frames 3 and 4: the dipole jumps by \(\+0.00, \+0.40, \+0.00\) e·"):
        read_dataset(tmp_path / "wrap.xyz")
    write_dataset(tmp_path / "smooth.xyz", _trajectory(quantum_at=None))
    assert len(read_dataset(tmp_path / "smooth.xyz")) == 6
    # independent snapshots (atoms far from each other's positions) are not compared
    data = _trajectory()
    for k, a in enumerate(data.frames):
        a.positions = np.random.default_rng(k).uniform(0, 5, (3, 3))
    write_dataset(tmp_path / "snapshots.xyz", data)
    assert len(read_dataset(tmp_path / "snapshots.xyz", properties=["dipole"])) == 6


def test_atoms_too_close_across_the_cell_wall_are_named(tmp_path):
    """Two atoms 0.05 Å apart through the cell wall are as close as two atoms side by side (the
    check searches images); far apart inside the cell is fine."""
    cell = np.diag([5.0, 5.0, 5.0])
    close = Atoms("H2", positions=[[0.02, 1.0, 1.0], [4.97, 1.0, 1.0]], cell=cell, pbc=True)
    close.write(tmp_path / "close.xyz")
    with pytest.raises(DataError, match=r"frame 0: atoms 0 and 1 are 0.05 Å apart"):
        read_dataset(tmp_path / "close.xyz", properties=[])
    apart = Atoms("H2", positions=[[0.02, 1.0, 1.0], [2.5, 1.0, 1.0]], cell=cell, pbc=True)
    apart.write(tmp_path / "apart.xyz")
    assert len(read_dataset(tmp_path / "apart.xyz", properties=[])) == 1
    # the same positions as a molecule: 4.95 Å apart, fine
    Atoms("H2", positions=close.positions).write(tmp_path / "molecule.xyz")
    assert len(read_dataset(tmp_path / "molecule.xyz", properties=[])) == 1
