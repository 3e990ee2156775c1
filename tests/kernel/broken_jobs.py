"""A job module whose import fails (allowed prefix ``tests.kernel.``)."""

raise RuntimeError("database unreachable at import time")
