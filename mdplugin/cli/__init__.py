"""``mdplugin <command>``: the parser (:mod:`.parser`) and one module per command. Nothing imports cli."""

from .parser import main

__all__ = ["main"]
