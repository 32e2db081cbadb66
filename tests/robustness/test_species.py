"""A model trained on one element set refuses structures with other elements, naming them — through
``predict``, after a save/load round trip, through the ASE calculator and on the command line."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from mdplugin.engines.ase import MLCalculator
from mdplugin.cli.parser import main
from mdplugin.structures.data import Dataset, write_dataset
from mdplugin.core.errors import DataError, MdpluginError
from mdplugin.models import build, load_model

from ..conftest import dichloroethane
from .helpers import one_error_line

N_TRAIN = 4

#: small hyper-parameters: the point is the species check, not accuracy
QUICK_HYPERS = {
    "soap": dict(target="energy", max_radial=2, max_angular=2, n_sparse=10),
    "lsoap": dict(target="dipole", max_radial=2, max_angular=2, n_sparse=10, n_components=16),
    "rpr": dict(target="dipole"),
}


def _train_frames():
    return [dichloroethane(rng=i, noise=0.05) for i in range(N_TRAIN)]


def _alien(symbol="O", index=4) -> Atoms:
    """Dichloroethane with one H replaced by another element."""
    atoms = dichloroethane(rng=99, noise=0.05)
    numbers = atoms.numbers.copy()
    numbers[index] = Atoms(symbol).numbers[0]
    atoms.numbers = numbers
    return atoms


@pytest.fixture(scope="module", params=list(QUICK_HYPERS))
def fitted(request, tmp_path_factory):
    kind = request.param
    frames = _train_frames()
    rng = np.random.default_rng(0)
    model = build(kind, **QUICK_HYPERS[kind])
    if kind == "soap":
        model.fit(frames, {"energy": rng.normal(size=N_TRAIN), "forces": [rng.normal(size=(8, 3)) for _ in frames]})
    else:
        model.fit(frames, rng.normal(size=(N_TRAIN, 3)))
    path = tmp_path_factory.mktemp(kind) / "model.npz"
    model.save(path)
    return kind, model, path


def _names_the_element(err: Exception, symbol: str) -> bool:
    """SOAP/λ-SOAP name the foreign element ('element(s) O not in the ... training set'); RPR, which
    needs one molecule in a fixed atom order, shows both formulas ('atoms CCClClOHHH differ ...')."""
    text = str(err)
    return (f"element(s) {symbol}" in text or f"element {symbol}" in text or f"'{symbol}'" in text
            or f"CCClCl{symbol}HHH" in text)


@pytest.mark.parametrize("symbol", ["O", "N"])
def test_predict_refuses_unknown_elements(fitted, symbol):
    kind, model, path = fitted
    for m in (model, load_model(path)):
        with pytest.raises(MdpluginError) as err:
            m.predict([dichloroethane(), _alien(symbol)])
        assert _names_the_element(err.value, symbol), (kind, str(err.value))
        assert isinstance(err.value, DataError)


def test_same_elements_are_accepted(fitted):
    kind, model, path = fitted
    out = load_model(path).predict([dichloroethane(rng=7, noise=0.05)])
    assert np.all(np.isfinite(out))


def test_calculator_refuses_unknown_elements(fitted):
    kind, model, path = fitted
    slot = "energy" if kind == "soap" else "dipole"
    calc = MLCalculator(**{slot: str(path)})
    atoms = _alien("O")
    atoms.calc = calc
    with pytest.raises(MdpluginError) as err:
        calc.get_property(slot, atoms)
    assert _names_the_element(err.value, "O"), (kind, str(err.value))


def test_command_line_predict_names_the_element(fitted, tmp_path, capsys):
    kind, model, path = fitted
    data = tmp_path / "alien.xyz"
    write_dataset(data, Dataset(frames=[dichloroethane(), _alien("O")]))
    rc = main(["predict", str(path), str(data), "-o", str(tmp_path / "out.xyz")])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "frame 1" in line and "O" in line, line
    assert not (tmp_path / "out.xyz").exists()
