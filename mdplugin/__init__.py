"""mdplugin: machine-learned energies, forces, dipoles and polarizabilities for MD engines.

Public entry points::

    import mdplugin
    model = mdplugin.models.build("rpr", target="dipole")
    model.fit(frames, dipoles)
    model.save("dipole.npz")
    model = mdplugin.load_model("dipole.npz")
"""

from .core.version import __version__  # noqa: E402
from .core.errors import MdpluginError  # noqa: E402
from .models.base import load_model  # noqa: E402

__all__ = ["MdpluginError", "load_model", "__version__"]
