"""An exploring run neither labels nor fits the holes of a young energy model (issue 28, point 5).

Hot segments on a model trained on a few frames run into structures it puts far too low (two
hydrogens 0.2-0.4 Å apart, bonds stretched by an Å); labelled by the oracle they lay 10-320 eV
above the other frames, and fitted they spoiled the dipole model of a 1,2-dichloroethane run
(13.9 % instead of 2-5 %). Two filters (:mod:`mdplugin.active.explore`): a short contact ends the
segment before any oracle call; a label far above the labelled energies at the run's hottest
temperature is refused (``refused.xyz``, counted as a call, never fitted).
"""

from __future__ import annotations

import csv

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import all_changes

from mdplugin.active import ActiveConfig, run_active
from mdplugin.active.explore import K_B, above_label_window, bond_graph, label_window_top, short_contact
from mdplugin.active.store import RunStore
from mdplugin.structures.data import read_dataset

from ..conftest import dichloroethane
from .helpers import ToyOracle, _config, water


def _random_motion(positions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``positions`` rotated, maybe reflected, shifted and permuted; returns them and the permutation."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q[:, 0] *= -1 if rng.random() < 0.5 else 1
    perm = rng.permutation(len(positions))
    return positions[perm] @ q.T + rng.normal(size=3), perm


def _pressed_hydrogens(distance: float) -> Atoms:
    """Anti 1,2-dichloroethane with its hydrogens 4 and 6 (on different carbons) moved towards each
    other along their line until ``distance`` Å apart (the geometry of seed 4's holes)."""
    a = dichloroethane()
    mid = 0.5 * (a.positions[4] + a.positions[6])
    u = (a.positions[6] - a.positions[4]) / np.linalg.norm(a.positions[6] - a.positions[4])
    a.positions[4], a.positions[6] = mid - 0.5 * distance * u, mid + 0.5 * distance * u
    return a


def test_short_contact_finds_pressed_hydrogens_whatever_the_frame():
    """The equilibrium molecule and a 1000 K-like rattle have no short contact; hydrogens pressed to
    0.3 Å (below 0.7 x 2 x 0.31 Å) have, under random rotations, reflections and permutations."""
    rng = np.random.default_rng(0)
    assert short_contact(dichloroethane(), 0.7) is None
    assert short_contact(dichloroethane(rng=1, noise=0.08), 0.7) is None
    assert short_contact(_pressed_hydrogens(0.50), 0.7) is None  # 0.50 Å > 0.434 Å
    hole = _pressed_hydrogens(0.30)
    for _ in range(5):
        positions, perm = _random_motion(hole.positions, rng)
        moved = Atoms(numbers=hole.numbers[perm], positions=positions)
        i, j, d = short_contact(moved, 0.7)
        assert sorted([perm[i], perm[j]]) == [4, 6] and d == pytest.approx(0.30, abs=1e-9)


def test_short_contact_sees_across_the_cell_wall():
    """In a periodic box the contact is the minimum-image one: an O and an H of two waters on either
    side of the wall, 0.5 Å apart through it (0.7 x 0.97 = 0.68 Å), and not when 1.8 Å apart."""
    def box(gap):
        h = 10.2 - gap  # water B's first hydrogen, ``gap`` Å from water A's oxygen through the wall at x = 10
        a = Atoms("OH2OH2", positions=[[0.2, 5, 5], [1.16, 5, 5], [-0.04, 5.93, 5],
                                       [h - 0.96, 5, 5], [h, 5, 5], [h - 1.2, 5.93, 5]],
                  cell=[10, 10, 10], pbc=True)
        a.wrap()
        return a

    i, j, d = short_contact(box(0.5), 0.7)
    assert {i, j} == {0, 4} and d == pytest.approx(0.5)
    assert short_contact(box(1.8), 0.7) is None
    moved = box(0.5)
    moved.positions += [3.0, 0.0, 0.0]  # the pair no longer straddles the wall
    moved.wrap()
    assert short_contact(moved, 0.7)[2] == pytest.approx(d)


def test_bond_graph_sees_a_bond_broken_or_formed_whatever_the_frame():
    """1,2-Dichloroethane has 7 bonds (C-C, 2 C-Cl, 4 C-H); a 1000 K-like rattle keeps them; a C-H
    stretched to 1.6 Å (seed 4's young model let it go to 2 Å) breaks one, the pressed hydrogens
    form one; under rotations, reflections and permutations the bonds map with the atoms."""
    rng = np.random.default_rng(4)
    bonds = bond_graph(dichloroethane(), 1.3)
    assert bonds == {(0, 1), (0, 2), (1, 3), (0, 4), (0, 5), (1, 6), (1, 7)}
    for seed in range(5):
        assert bond_graph(dichloroethane(rng=seed, noise=0.05), 1.3) == bonds
    stretched = dichloroethane()
    u = stretched.positions[4] - stretched.positions[0]
    stretched.positions[4] = stretched.positions[0] + 1.6 * u / np.linalg.norm(u)
    assert bonds - bond_graph(stretched, 1.3) == {(0, 4)}
    assert bond_graph(_pressed_hydrogens(0.7), 1.3) - bonds == {(4, 6)}
    for a in (dichloroethane(), stretched):
        positions, perm = _random_motion(a.positions, rng)
        moved = bond_graph(Atoms(numbers=a.numbers[perm], positions=positions), 1.3)
        assert {tuple(sorted((int(perm[i]), int(perm[j])))) for i, j in moved} == bond_graph(a, 1.3)


def test_bond_graph_counts_a_bond_across_the_cell_wall():
    """A water split by the wall of a periodic box keeps its two O-H bonds (and no other)."""
    a = Atoms("OH2", positions=[[0.1, 5, 5], [-0.86, 5, 5], [0.34, 5.93, 5]], cell=[10, 10, 10], pbc=True)
    a.wrap()
    assert bond_graph(a, 1.3) == {(0, 1), (0, 2)}


def test_label_window_keeps_a_boltzmann_sample_at_the_hottest_temperature():
    """The potential energy of 3N harmonic degrees of freedom at T is kT/2 chi2(3N) above the
    minimum: the label window (6 standard deviations at the hottest temperature) keeps such a sample
    whole at that temperature and refuses most of one at 3 T; seed 4's labels of 10-320 eV are far
    above it (2.8 eV for 8 atoms at 1000 K); an energy below the reference is never refused."""
    rng = np.random.default_rng(3)
    n_atoms, hottest = 8, 1000.0
    assert label_window_top(n_atoms, hottest, 6.0) == pytest.approx(K_B * hottest * (12 + 6 * np.sqrt(12)))
    for reference in (0.0, -812.4):
        at_t = reference + 0.5 * K_B * hottest * rng.chisquare(3 * n_atoms, size=4000)
        hot = reference + 0.5 * K_B * 3 * hottest * rng.chisquare(3 * n_atoms, size=4000)
        assert not any(above_label_window(e, reference, n_atoms, hottest, 6.0) for e in at_t)
        assert np.mean([above_label_window(e, reference, n_atoms, hottest, 6.0) for e in hot]) > 0.5
        assert all(above_label_window(reference + e, reference, n_atoms, hottest, 6.0) for e in (10.7, 61.98, 321.8))
        assert not above_label_window(reference - 5.0, reference, n_atoms, hottest, 6.0)
    assert not above_label_window(np.nan, 0.0, n_atoms, hottest, 6.0)


def test_tblite_puts_a_hole_of_the_model_far_above_the_label_window():
    """Real GFN2-xTB energies: a 1000 K Langevin frame of 1,2-dichloroethane lies inside the window
    above the relaxed molecule, the structure with two hydrogens pressed to 0.5 Å (no contact by the
    geometric test) far above it: the label filter, not the contact test, catches it."""
    pytest.importorskip("tblite")
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.optimize import BFGS
    from ase import units
    from tblite.ase import TBLite

    def energy(a):
        a = a.copy()
        a.calc = TBLite(method="GFN2-xTB", verbosity=0)
        return a.get_potential_energy()

    relaxed = dichloroethane()
    relaxed.calc = TBLite(method="GFN2-xTB", verbosity=0)
    BFGS(relaxed, logfile=None).run(fmax=0.05, steps=100)
    reference = relaxed.get_potential_energy()
    hot = relaxed.copy()
    hot.calc = TBLite(method="GFN2-xTB", verbosity=0)
    thermalize_momenta(hot, temperature_K=1000, rng=np.random.default_rng(5))
    Langevin(hot, 0.5 * units.fs, temperature_K=1000, friction=0.02 / units.fs, fixcm=False, rng=np.random.default_rng(6)).run(60)
    assert not above_label_window(energy(hot), reference, 8, 1000.0, 6.0)
    pressed = _pressed_hydrogens(0.5)
    assert short_contact(pressed, 0.7) is None
    assert energy(pressed) - reference > 3 * label_window_top(8, 1000.0, 6.0)
    assert above_label_window(energy(pressed), reference, 8, 1000.0, 6.0)


class _HoleOracle(ToyOracle):
    """The analytic oracle, with ``jump`` eV added to the labelling calls in ``holes`` (counted from
    1 once :meth:`arm` is called, after the initial frames): the energy a hole of the model has."""

    def __init__(self, holes, jump=50.0):
        super().__init__()
        self.holes, self.jump, self.n = set(holes), jump, None

    def arm(self, *_):
        if self.n is None:
            self.n = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.n is not None:
            self.n += 1
            if self.n in self.holes:
                self.results["energy"] += self.jump
                self.results["free_energy"] += self.jump


def _events(run_dir, event):
    with open(run_dir / "log.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["event"] == event]


def test_refused_labels_count_as_calls_and_are_never_fitted(tmp_path):
    """Labels 50 eV above the others go to refused.xyz and a ``refused`` row, count against the call
    budget, survive a resume as calls; data.xyz (what the models are fitted on) keeps only the
    sane frames. Without the filter (the rule before) they land in data.xyz."""
    cfg = dict(segment=10, sample_every=2, pool=30, steps=400, max_calls=6, explore=True, n_initial=4)
    oracle = _HoleOracle({2, 4})
    summary = run_active(water(), tmp_path / "run", _config(**cfg), oracle=oracle, say=lambda m: None,
                         on_train=oracle.arm)
    run_dir = tmp_path / "run"
    refused = _events(run_dir, "refused")
    assert len(refused) == 2 and "above the lowest labelled energy" in refused[0]["note"]
    assert summary.oracle_calls == 6 and "oracle-call budget" in summary.reason
    data = read_dataset(run_dir / "data.xyz")
    assert len(data) == 4 + 4 and np.ptp(data.energy) < 5.0
    assert len(read_dataset(run_dir / "refused.xyz")) == 2
    store = RunStore(run_dir)
    store.open()
    assert store.origins == {"reference": 4, "md": 4, "refused": 2}
    more = run_active(None, run_dir, resume=True, overrides={"max_calls": 7}, oracle=ToyOracle(),
                      say=lambda m: None)
    assert more.oracle_calls == 7 and len(read_dataset(run_dir / "data.xyz")) == 9

    before = _HoleOracle({2, 4})
    run_active(water(), tmp_path / "before", _config(**cfg, explore_label_window=None), oracle=before,
               say=lambda m: None, on_train=before.arm)
    assert np.ptp(read_dataset(tmp_path / "before" / "data.xyz").energy) > 40.0
    assert not (tmp_path / "before" / "refused.xyz").exists()


def test_old_run_folders_keep_every_label_and_bad_settings_are_named():
    old = ActiveConfig.from_dict({"steps": 10, "explore": True})
    assert old.explore_contact is None and old.explore_label_window is None
    assert ActiveConfig().explore_contact == 0.7 and ActiveConfig().explore_label_window == 20.0 and ActiveConfig().explore_bonds == 1.3
    assert ActiveConfig(temperature=500.0).hottest() == 1000.0
    with pytest.raises(Exception, match="explore_contact"):
        ActiveConfig(explore_contact=1.5)
    with pytest.raises(Exception, match="explore_label_window"):
        ActiveConfig(explore_label_window=-1.0)


def test_a_segment_ends_where_its_bonds_change_and_no_such_structure_is_labelled(tmp_path):
    """A real run (analytic oracle) with the bond length cut at 1.08 x the covalent radii (1.05 Å for
    O-H, 0.96 Å at rest: the thermal motion at 300-600 K crosses it, as the young model's
    dissociation does at 1.3): segments end at ``hole`` rows and every labelled frame keeps the start's
    bonds; without the check (the rule before) labelled frames have bonds the start had not."""
    cfg = dict(segment=10, sample_every=2, pool=30, steps=300, max_calls=6, explore=True, n_initial=4,
               explore_contact=None)
    reference = bond_graph(water(), 1.08)

    def changed(name):
        frames = ase.io.read(tmp_path / name / "data.xyz", ":")
        md = [a for a in frames if a.info["active_origin"] == "md"]
        assert len(md) == 6 and all(bond_graph(a, 1.08) == reference for a in frames if a not in md)
        return sum(bond_graph(a, 1.08) != reference for a in md)

    run_active(water(), tmp_path / "bonds", _config(**cfg, explore_bonds=1.08), oracle=ToyOracle(), say=lambda m: None)
    holes = _events(tmp_path / "bonds", "hole")
    assert holes and "broken" in holes[0]["note"] and "segment ended" in holes[0]["note"]
    assert changed("bonds") == 0
    run_active(water(), tmp_path / "before", _config(**cfg, explore_bonds=None), oracle=ToyOracle(), say=lambda m: None)
    assert _events(tmp_path / "before", "hole") == [] and changed("before") > 0


def test_cli_turns_the_filters_off_for_a_run_meant_to_see_reactions(tmp_path):
    """``mdplugin active --no-explore-filters`` saves a run without the hole filters; the default keeps them."""
    import json
    import subprocess

    from .helpers import RUN_OPTIONS, _cli, _env, _start_file

    options = [o if o != "1200" else "60" for o in RUN_OPTIONS]
    for name, extra in (("off", ["--no-explore-filters"]), ("on", [])):
        run = subprocess.run(_cli(str(_start_file(tmp_path)), "-o", str(tmp_path / name), *options, "--quiet", *extra),
                             env=_env(0.0), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
    off = json.loads((tmp_path / "off" / "config.json").read_text())["config"]
    on = json.loads((tmp_path / "on" / "config.json").read_text())["config"]
    assert (off["explore_contact"], off["explore_bonds"], off["explore_label_window"]) == (None, None, None)
    assert (on["explore_contact"], on["explore_bonds"], on["explore_label_window"]) == (0.7, 1.3, 20.0)
