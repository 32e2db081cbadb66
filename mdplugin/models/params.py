"""scikit-learn's estimator parameter protocol, without importing scikit-learn.

Importing ``sklearn.base`` pulls in ``scipy.stats`` and takes 2–3 s on this machine, at the start of
every ``mdplugin`` command and MPI rank. The models only need the protocol: hyper-parameters are the
arguments of ``__init__``, stored under their own names; :meth:`get_params` / :meth:`set_params` read
and write them (``deep`` and ``name__sub`` reach into parameters that have parameters themselves), so
``sklearn.base.clone`` and ``sklearn.model_selection`` tools work on mdplugin models unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["ParamsMixin"]


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``repr`` as scikit-learn's ``BaseEstimator`` gives them."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The names of ``__init__``'s arguments, sorted (no ``*args``; ``**kwargs`` ignored)."""
        init = cls.__init__
        if init is object.__init__:
            return []
        names = []
        for p in inspect.signature(init).parameters.values():
            if p.name == "self" or p.kind == p.VAR_KEYWORD:
                continue
            if p.kind == p.VAR_POSITIONAL:
                raise TypeError(f"{cls.__name__}.__init__ must not take *args: hyper-parameters are named")
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters ``{name: value}``; with ``deep``, also ``name__sub`` for parameters that
        have parameters of their own (e.g. a scikit-learn regressor)."""
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> "ParamsMixin":
        """Set hyper-parameters (``name`` or ``name__sub``); returns ``self``. An unknown name is a
        ``ValueError`` naming it and the valid ones."""
        valid = self._get_param_names()
        nested: dict[str, dict] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {', '.join(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        """``Class(param=value, ...)`` with the parameters that differ from their defaults."""
        signature = inspect.signature(type(self).__init__).parameters
        shown = []
        for name in self._get_param_names():
            value = getattr(self, name, None)
            default = signature[name].default if name in signature else inspect.Parameter.empty
            try:
                same = default is not inspect.Parameter.empty and bool(value == default)
            except Exception:  # arrays and the like: always shown
                same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"
