"""The library's exceptions.

Every error a user can cause is a `SisyphusError` subclass whose message is one clear
line; the CLI prints it on stderr and exits non-zero, never with a traceback.
"""

from __future__ import annotations


class SisyphusError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code: int = 1


class ConfigError(SisyphusError):
    """A setting is wrong: an unwritable SISYPHUS_HOME, a malformed URL, a bad option value."""


class DatabaseError(SisyphusError):
    """The database cannot be reached or lacks what sisyphus needs (e.g. pgvector)."""


class SchemaError(DatabaseError):
    """The database schema is missing, older or newer than this code."""


class InputError(SisyphusError):
    """An input the user gave is unusable: a file, a vector, an id, a filter."""


class MediaError(InputError):
    """An image or video cannot be read or decoded, or is over a sane size limit."""


class FilterError(InputError):
    """A --where filter does not parse, names an unknown column, or tries to write."""


class ModelError(SisyphusError):
    """An embedding model is unknown, its weights are missing, or it disagrees with the registry."""


class DeviceError(SisyphusError):
    """A device was asked for that is not available (e.g. --device cuda without a GPU)."""


class AnnIndexError(SisyphusError):
    """A faiss or pgvector index is missing, stale, corrupt or cannot be built as asked."""
