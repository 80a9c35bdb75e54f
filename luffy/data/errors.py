"""Errors raised for bad training or evaluation data."""

from __future__ import annotations


class LuffyDataError(ValueError):
    """Input data that cannot be used as given.

    The message names the file or row and the field at fault and says how to fix it. Being a
    ``ValueError`` it is caught by code that already handles bad values.
    """
