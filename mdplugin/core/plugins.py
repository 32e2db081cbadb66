"""Objects named ``package.module:attribute`` on the command line (oracle and calculator factories).

The module is looked up on ``sys.path``, then in the current folder (as ``python -m`` would; the
``mdplugin`` script alone does not put the folder on the path: it is added at the end, so it never
hides an installed package).
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from .errors import ConfigError

__all__ = ["import_module_here", "import_object"]


def import_module_here(module: str) -> ModuleType:
    """``importlib.import_module(module)``, also finding a module of the current folder."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = module.split(".")[0]
        if exc.name != top or any(os.path.abspath(p or ".") == cwd for p in sys.path):
            raise
        sys.path.append(cwd)
        return importlib.import_module(module)


def import_object(spec: str, what: str) -> Any:
    """The object ``spec`` = ``"package.module:attribute"`` names; ``what`` (e.g. ``"oracle
    factory"``) words the one-line :class:`ConfigError` when it cannot be imported."""
    module, _, attribute = spec.partition(":")
    if not module or not attribute:
        raise ConfigError(f"{what} {spec!r}: give it as package.module:function")
    try:
        return getattr(import_module_here(module), attribute)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {what} {spec!r}: no module named {exc.name!r} "
                          f"on the Python path or in the current folder {os.getcwd()}") from None
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {what} {spec!r}: {exc}") from None
