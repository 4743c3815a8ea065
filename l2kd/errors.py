"""Errors a user can cause. The CLI prints each as one line and exits with code 2.

Everything a user typed or supplied (a config key, a data file, a task name, a missing teacher)
raises one of these with the file and the key in the message; `assert` is kept for internal
invariants only.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with user input: printed as one line, exit code 2."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(UserError):
    """A trial or grid config is malformed (unknown key, wrong type, bad value)."""


class DataError(UserError):
    """A data file is missing or malformed."""


class ArtifactError(UserError):
    """A stored artifact (teacher, checkpoint, result) is missing or does not match."""
