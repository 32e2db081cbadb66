"""Exception types. Every error a user can cause is an :class:`MdpluginError`.

The command line turns these into a one-line ``mdplugin: error: ...`` message and exit status 2.
"""


class MdpluginError(Exception):
    """Base class of all errors caused by input, files or configuration."""


class DataError(MdpluginError, ValueError):
    """A data set, structure or time series is malformed (names file, frame and problem)."""


class ModelFileError(MdpluginError):
    """A model file is missing, truncated, altered, of a newer format or of the wrong kind."""


class ConfigError(MdpluginError, ValueError):
    """Inconsistent or unknown options (unknown model kind, unsupported target, ...)."""


class OracleError(MdpluginError):
    """A reference calculation failed (names the frame)."""


class SimulationError(MdpluginError):
    """A simulation went wrong (non-finite forces, atom lost, uncertainty above the hard limit)."""


class DataWarning(UserWarning):
    """Input was accepted after a documented repair (e.g. a polarizability symmetric only to
    rounding, symmetrised); the command line prints it as one ``mdplugin: warning: ...`` line."""
