"""The one error type of `ember.bag`: every message names the bag, topic or type at fault."""

from __future__ import annotations


class BagError(RuntimeError):
    """A bag or labels file that cannot be used as asked (missing, truncated, unknown type, ...)."""
