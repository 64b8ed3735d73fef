"""Errors that end the process with a message instead of a traceback."""


class StartupError(RuntimeError):
    """A dependency (model, Redis, Kafka) is not usable; the message says which and why."""
