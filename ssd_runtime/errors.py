"""Typed errors of the toolkit. Messages say what went wrong, where, and what to do."""
from __future__ import annotations


class SpecError(ValueError):
    """A model spec is missing, of an unknown schema, or does not match the artifact it came with."""
