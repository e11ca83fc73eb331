"""The sweeper's one error: a whole message, printed without a traceback."""

from hydra.errors import CompactHydraException

from tinycnn.errors import ConfigError


class SweepError(CompactHydraException, ConfigError):
    """Printed by Hydra as its message alone (no traceback); also a tinycnn ConfigError."""
