"""Errors that say how the job that met them should end."""

from __future__ import annotations


class PermanentError(Exception):
    """Trying again cannot help (GitHub answered with a shape the app does not understand, say): the
    worker ends the job at once and keeps this error, instead of retrying it like a network fault."""
