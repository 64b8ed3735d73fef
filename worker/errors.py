"""Errors that end the process with a message instead of a traceback."""


class StartupError(RuntimeError):
    """A dependency (model, Redis, Kafka) is not usable; the message says which and why."""


class UnavailableError(StartupError):
    """A dependency does not answer (yet): nothing listens, the connection times out, the
    server is still loading. Worth waiting for at start-up (:mod:`worker.startup`), unlike a
    refused login or a wrong setting, which no amount of waiting fixes."""
