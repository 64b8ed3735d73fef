"""modstream: a streaming content-moderation worker."""

__version__ = "0.1.0"
