"""Physics: IR and Raman spectra of a water molecule from classical GFN2-xTB MD at 50 K against
the harmonic answers of ase.vibrations on the same calculator.

Design of the simulation (keeps the test near a minute):

* GFN2-xTB (tblite) energies, forces and dipoles; the polarizability by central finite
  differences of the dipole in a ±0.02 V/Å field (the convention of :mod:`mdplugin.oracles.label`),
  with one cached tblite calculator per field so every SCF restarts from the previous one.
* Harmonic reference: ``ase.vibrations.Infrared`` (frequencies, intensities in km/mol) and the
  Raman activity and depolarisation ratio from finite differences of α along the normal modes.
* NVE velocity-Verlet runs of 0.25 fs (Verlet shifts a 3650 cm⁻¹ line up by (ωΔt)²/24 ≈ 5 cm⁻¹)
  started from thermal normal-mode initial conditions: each excited mode carries exactly k_BT
  at a random phase (so <Q̇²> = k_BT as in the canonical ensemble, without the large scatter
  of sampled mode energies), no rotation or translation. GFN2-xTB puts the symmetric and
  antisymmetric O–H stretches only ~8 cm⁻¹ apart, too close to resolve in picoseconds, so
  the two symmetry blocks run separately: one run with both totally symmetric modes (bend and
  symmetric stretch; C2v symmetry keeps the antisymmetric stretch at rest), one run with the
  antisymmetric stretch. Their spectra add up to the thermal spectrum.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tblite")
from ase import units
from ase.build import molecule
from ase.calculators.calculator import all_changes
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.vibrations import Infrared

from mdplugin.oracles.label import COULOMB_CONSTANT, tblite_factory
from mdplugin.spectra import ir_spectrum, raman_spectrum

TEMPERATURE = 50.0  # K
MD_STEP = 0.25  # fs
DIPOLE_STRIDE = 2  # dipoles every 0.5 fs
ALPHA_STRIDE = 12  # polarizabilities every 3 fs (Nyquist 5560 cm⁻¹)
N_STEPS = 2400  # 0.6 ps per run
DEPTH = 300.0  # fs: Hann main lobe ±111 cm⁻¹
FIELD = 0.02  # V/Å
HALF_BAND = 200.0  # cm⁻¹ either side of a harmonic frequency (the bands are isolated per run)


class FieldPolarizability:
    """α (3, 3) in Å³ by central differences of tblite dipoles in ±FIELD along x, y, z."""

    def __init__(self):
        factory = tblite_factory()
        self.calcs = {(j, s): factory(s * FIELD * np.eye(3)[j]) for j in range(3) for s in (1, -1)}

    def __call__(self, atoms) -> np.ndarray:
        dmu = np.empty((3, 3))
        for j in range(3):
            mu = []
            for s in (1, -1):
                calc = self.calcs[(j, s)]
                changes = ["positions"] if calc.atoms is not None else all_changes
                calc.calculate(atoms, ["dipole"], changes)
                mu.append(np.array(calc.results["dipole"]))
            dmu[:, j] = (mu[0] - mu[1]) / (2 * FIELD)
        alpha = COULOMB_CONSTANT * dmu
        return 0.5 * (alpha + alpha.T)


pytestmark = pytest.mark.slow  # about 35 s of CPU on an idle machine


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    import tblite.ase  # noqa: F401  (loads tblite's OpenMP runtime, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    tblite_factory()(None)
    with threadpool_limits(1):  # tblite's OpenMP threads only slow a three-atom molecule down
        yield _simulate(tmp_path_factory.mktemp("water"))


def _simulate(folder):
    polarizability = FieldPolarizability()
    atoms = molecule("H2O")
    atoms.calc = tblite_factory()(None)
    BFGS(atoms, logfile=None).run(fmax=1e-4)

    ir = Infrared(atoms, name=str(folder / "ir"), delta=0.01, nfree=2)
    ir.run()
    freqs = ir.get_frequencies().real[-3:]  # cm⁻¹: bend, symmetric, antisymmetric stretch
    intensities = ir.intensities[-3:] * 42.255  # km/mol
    hessian = ir.get_vibrations().get_hessian_2d()
    inv_sqrt_m = np.repeat(atoms.get_masses() ** -0.5, 3)
    omega2, vectors = np.linalg.eigh(inv_sqrt_m[:, None] * hessian * inv_sqrt_m[None, :])
    omega = np.sqrt(omega2[-3:])  # rad per ASE time unit
    cart = (vectors[:, -3:] * inv_sqrt_m[:, None]).T.reshape(3, -1, 3)  # Å per (Å·√amu)

    # harmonic Raman tensors dα/dQ (Å³ per Å·√amu)
    x0 = atoms.positions.copy()
    activity, rho = [], []
    for k in range(3):
        probe = atoms.copy()
        probe.positions = x0 + 0.01 * cart[k]
        plus = polarizability(probe)
        probe.positions = x0 - 0.01 * cart[k]
        d_alpha = (plus - polarizability(probe)) / 0.02
        a = np.trace(d_alpha) / 3
        gamma2 = 1.5 * np.sum((d_alpha - a * np.eye(3)) ** 2)
        activity.append(45 * a**2 + 7 * gamma2)
        rho.append(3 * gamma2 / (45 * a**2 + 4 * gamma2))

    kT = units.kB * TEMPERATURE
    rng = np.random.default_rng(2024)
    runs = {}
    for name, excited in (("symmetric", [0, 1]), ("antisymmetric", [2])):
        phase = rng.uniform(0, 2 * np.pi, 3)
        amp = np.zeros(3)
        amp[excited] = np.sqrt(2 * kT)  # energy k_BT per excited mode
        q, qdot = amp / omega * np.cos(phase), -amp * np.sin(phase)
        md = atoms.copy()
        md.calc = atoms.calc
        md.positions = x0 + np.tensordot(q, cart, axes=1)
        md.set_velocities(np.tensordot(qdot, cart, axes=1))
        dyn = VelocityVerlet(md, timestep=MD_STEP * units.fs)
        mu, alpha = [], []

        def record():
            if dyn.nsteps % DIPOLE_STRIDE == 0:
                mu.append(md.get_dipole_moment())
            if dyn.nsteps % ALPHA_STRIDE == 0:
                alpha.append(polarizability(md))

        dyn.attach(record, interval=1)
        dyn.run(N_STEPS)
        runs[name] = (
            ir_spectrum([np.array(mu)], MD_STEP * DIPOLE_STRIDE, TEMPERATURE, depth=DEPTH),
            raman_spectrum([np.array(alpha)], MD_STEP * ALPHA_STRIDE, TEMPERATURE, depth=DEPTH),
        )
    return dict(freqs=freqs, intensities=intensities, activity=np.array(activity), rho=np.array(rho),
                runs=runs, modes={"symmetric": [0, 1], "antisymmetric": [2]})


def _each_mode(water):
    for name, modes in water["modes"].items():
        ir, raman = water["runs"][name]
        for k in modes:
            yield k, ir, raman


def test_ir_peaks_at_harmonic_frequencies(water):
    for k, ir, _ in _each_mode(water):
        peaks = ir.peaks(prominence=0.02)
        nearest = peaks[np.argmin(np.abs(peaks - water["freqs"][k]))]
        assert abs(nearest - water["freqs"][k]) < 10.0, (k, peaks, water["freqs"])


def test_ir_band_intensities_match_ase_infrared(water):
    for k, ir, _ in _each_mode(water):
        f = water["freqs"][k]
        area = ir.band_area("ir", f - HALF_BAND, f + HALF_BAND)
        assert area == pytest.approx(water["intensities"][k], rel=0.15), (k, area, water["intensities"])


def test_raman_depolarization_ratios(water):
    for k, _, raman in _each_mode(water):
        f = water["freqs"][k]
        vv = raman.band_area("vv", f - HALF_BAND, f + HALF_BAND)
        vh = raman.band_area("vh", f - HALF_BAND, f + HALF_BAND)
        rho = vh / vv
        if k < 2:  # totally symmetric: bend and symmetric stretch
            assert rho < 0.75, (k, rho)
        else:  # antisymmetric stretch
            assert rho == pytest.approx(0.75, abs=0.05)
        assert rho == pytest.approx(water["rho"][k], abs=0.03), (k, rho, water["rho"])
        # and the band is the harmonic Raman activity
        unpol = raman.band_area("unpolarized", f - HALF_BAND, f + HALF_BAND)
        assert unpol == pytest.approx(water["activity"][k], rel=0.15), (k, unpol, water["activity"])
