"""A job module that imports a package that is not installed."""

import sigrun_test_not_installed_dependency  # type: ignore[import-not-found]  # noqa: F401
