"""mdplugin: machine-learned energies, forces, dipoles and polarizabilities for MD engines.

Public entry points::

    import mdplugin
    model = mdplugin.models.build("rpr", target="dipole")
    model.fit(frames, dipoles)
    model.save("dipole.npz")
    model = mdplugin.load_model("dipole.npz")

The layers (``mdplugin.models``, ``mdplugin.engines``, ...) and ``load_model`` are imported on first
use: the models import scikit-learn, which costs a command that does not need them about a second
(:mod:`mdplugin.models.base`).
"""

import importlib

from .core.errors import MdpluginError
from .core.version import __version__

__all__ = ["MdpluginError", "load_model", "__version__"]

#: sub-packages reachable as attributes of ``mdplugin`` (imported on first access)
_LAYERS = ("core", "structures", "features", "learn", "models", "engines", "oracles", "active", "spectra")


def __getattr__(name: str):
    if name == "load_model":
        return importlib.import_module(".models.base", __name__).load_model
    if name in _LAYERS:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
