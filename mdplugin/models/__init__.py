"""Models of energies/forces, dipoles and polarizabilities behind one interface.

``build(name, target=..., **hypers)`` makes a model by registry name; ``load_model(path)`` reads a
saved one. Names: ``"rpr"`` (rotate–predict–rotate), ``"lsoap"`` (λ-SOAP SA-GPR), ``"soap"``
(invariant SOAP energy model).
"""

from .base import Model, build, get_model_class, load_model, register

__all__ = ["Model", "build", "get_model_class", "load_model", "register"]
