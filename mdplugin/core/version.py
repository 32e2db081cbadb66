"""The package version (one place; ``mdplugin.__version__`` and the model files' metadata read it)."""

__version__ = "0.1.0"
