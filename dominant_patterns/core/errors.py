"""Errors that describe bad user input (config, paths, data) in plain words."""

from __future__ import annotations


class UserInputError(ValueError):
    """A problem the user can fix: the message names the bad value and the valid choices."""


class ConfigError(UserInputError):
    """A config value is out of range or of the wrong kind."""


class DataError(UserInputError):
    """A dataset root is missing, empty or unreadable."""


class StorageError(OSError):
    """An essential output (metrics.json, pattern.pt, a checkpoint) could not be written: the message names the
    file, the OS error and the free space left."""
