"""Errors a user can act on.

Every failure caused by the user's input, model folder, device or network is raised as a
:class:`StreamposeError` whose message is one line naming the thing and the cause. The CLI prints
that line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class StreamposeError(Exception):
    """A failure with a one-line, user-facing explanation."""

    exit_code = 2


class InputError(StreamposeError):
    """An input (file, URL, directory, array, stream) cannot be used."""


class ModelError(StreamposeError):
    """A model folder is missing, incomplete or of a kind streampose cannot run."""


class ConfigError(StreamposeError):
    """A pipeline YAML or a setting is wrong."""


class DeviceError(StreamposeError):
    """The requested device or backend is not available on this machine."""


class DownloadError(StreamposeError):
    """An official model could not be downloaded."""
