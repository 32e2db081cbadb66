"""``mdplugin <command>``: the parser (:mod:`.main`) and one module per command. Nothing imports cli."""

from .parser import main

__all__ = ["main"]
