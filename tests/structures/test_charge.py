"""The total charge of a structure: read, checked, and handed to the oracles."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from mdplugin.core.errors import DataError, OracleError
from mdplugin.structures.charge import frame_charge
from mdplugin.structures.data import read_dataset


def ammonium_water():
    t = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]], float) / np.sqrt(3.0) * 1.03
    w = molecule("H2O")
    w.translate([3.2, 0.3, -0.2])
    atoms = Atoms("NH4", positions=np.vstack([[0, 0, 0], t])) + w
    atoms.info["charge"] = 1
    return atoms


def test_charge_defaults_to_zero_and_must_be_whole():
    atoms = molecule("H2O")
    assert frame_charge(atoms) == 0
    for good, value in ((1, 1), (-2.0, -2), ("1", 1)):
        atoms.info["charge"] = good
        assert frame_charge(atoms) == value
    for bad in (0.5, "one", float("nan")):
        atoms.info["charge"] = bad
        with pytest.raises(DataError, match="^frame 4: charge .* is not an integer"):
            frame_charge(atoms, "frame 4")
    atoms.info["charge"] = 11
    with pytest.raises(DataError, match="^frame: charge 11 leaves -1 electrons in H2O"):
        frame_charge(atoms)


def test_a_data_file_with_a_fractional_charge_names_the_frame(tmp_path):
    path = tmp_path / "data.xyz"
    frames = [molecule("H2O"), molecule("H2O")]
    frames[1].info["charge"] = 0.5
    for a in frames:
        a.info["energy"] = -1.0
    from ase.io import write

    write(path, frames, format="extxyz")
    with pytest.raises(DataError, match=r"frame 1: charge 0.5 is not an integer"):
        read_dataset(path, properties=["energy"])
    frames[1].info["charge"] = -1
    write(path, frames, format="extxyz")
    assert read_dataset(path, properties=["energy"]).frames[1].info["charge"] == -1


def test_tblite_gets_the_charge_and_gives_the_dipole_about_the_centre_of_mass():
    from mdplugin.oracles.label import label_frames
    from mdplugin.oracles.tblite import TBLite

    atoms = ammonium_water()
    calc = TBLite()
    calc.calculate(atoms.copy(), ["energy", "charges", "dipole"])
    assert calc.results["charges"].sum() == pytest.approx(1.0, abs=1e-6)  # the charge reached tblite
    moved = atoms.copy()
    moved.translate([5.0, -3.0, 2.0])
    data = label_frames([atoms, moved], "tblite", ["energy", "dipole"])
    np.testing.assert_allclose(data.dipole[1], data.dipole[0], atol=1e-5)  # about the centre of mass
    neutral = atoms.copy()
    neutral.info["charge"] = 0
    assert label_frames([neutral], "tblite", ["energy"]).energy[0] != pytest.approx(data.energy[0], abs=0.1)


def test_pyscf_gets_the_charge_and_an_impossible_one_is_one_line():
    from mdplugin.oracles.label import label_frames, make_oracle

    heh = Atoms("HeH", positions=[[0, 0, 0], [0, 0, 0.78]])
    heh.info["charge"] = 1
    calc = make_oracle("pyscf", basis="sto-3g", xc="hf")
    cation = label_frames([heh], calc, ["energy", "dipole"])
    moved = heh.copy()
    moved.translate([1.0, 2.0, 3.0])
    np.testing.assert_allclose(label_frames([moved], calc, ["dipole"]).dipole[0], cation.dipole[0], atol=1e-6)
    heh.info["charge"] = 0  # 3 electrons with spin 0: PySCF refuses
    with pytest.raises(OracleError, match=r"^frame 0: .*failed: .*") as err:
        label_frames([heh], calc, ["energy"])
    assert "\n" not in str(err.value)


def test_labelled_data_keep_the_charge_they_were_labelled_with(tmp_path):
    # the labels of a charged structure written without its charge would be learned as neutral
    from mdplugin.oracles.label import label_frames
    from mdplugin.structures.data import write_dataset

    cation, neutral = ammonium_water(), molecule("H2O")
    data = label_frames([cation, neutral], "tblite", ["energy", "dipole"])
    assert [a.info.get("charge") for a in data.frames] == [1, None]
    write_dataset(tmp_path / "d.xyz", data)
    back = read_dataset(tmp_path / "d.xyz", properties=["energy", "dipole"])
    assert [a.info.get("charge", 0) for a in back.frames] == [1, 0]
    np.testing.assert_allclose(back.dipole, data.dipole, atol=1e-10)


def test_a_charge_tblite_cannot_do_is_one_line_naming_the_frame():
    from mdplugin.oracles.label import label_frames

    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    h2.info["charge"] = 3
    with pytest.raises(DataError, match=r"^frame 1: charge 3 leaves -1 electrons in H2$") as err:
        label_frames([Atoms("He"), h2], "tblite", ["energy"])
    assert "\n" not in str(err.value)
