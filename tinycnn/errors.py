"""Errors that carry a message meant for the user, printed without a traceback."""


class TinycnnError(Exception):
    """Base class: the message is complete and says what to do."""


class ConfigError(TinycnnError, ValueError):
    """A config value that cannot work (raised before any data is loaded)."""


class Diverged(TinycnnError):
    """Training produced a non-finite loss."""
