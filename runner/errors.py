"""The one exception tree of sigrun.

Every error sigrun raises on purpose derives from :class:`SigrunError`, so a
caller can catch "anything sigrun refused" without catching programming errors.
Errors from libraries are wrapped at the boundary with ``raise ... from e``.
"""


class SigrunError(Exception):
    """Root of every error sigrun raises on purpose."""


class PayloadError(SigrunError):
    """A job payload is not something sigrun can run (not JSON, no func, bad shape)."""


class FunctionNotAllowed(SigrunError):
    """The job names a module outside the runner's allow-list."""


class FunctionNotFound(SigrunError):
    """The job names a module or attribute that does not exist or is not callable."""


class ConfigError(SigrunError):
    """A command-line option or environment variable has a value that cannot work."""
