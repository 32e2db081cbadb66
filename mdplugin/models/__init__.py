"""Models of energies/forces, dipoles and polarizabilities behind one contract.

``build(name, target=..., **hypers)`` makes a model by registry name; ``load_model(path)`` reads a
saved one. Names: ``"rpr"`` (rotate–predict–rotate, :class:`~mdplugin.models.rpr.RPRModel`),
``"lsoap"`` (λ-SOAP SA-GPR, :class:`~mdplugin.models.lsoap.LambdaSoapModel`), ``"soap"`` (invariant
SOAP energy model, :class:`~mdplugin.models.soap.SoapEnergyModel`). Every model takes
``fit(frames, targets, *, comm=None)`` with :class:`Targets` (or a mapping, or its target's array)
and gives a :class:`Prediction` from shared features (:mod:`mdplugin.models.base`).
"""

from .base import Model, build, get_model_class, load_model, register
from .contract import Prediction, Targets

__all__ = ["Model", "Prediction", "Targets", "build", "get_model_class", "load_model", "register"]
