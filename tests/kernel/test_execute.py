"""The child's side: resolving ``job.func`` against the allow-list, and the report format."""

from __future__ import annotations

import math

import pytest

from sigrun.runner.errors import FunctionNotAllowed, FunctionNotFound
from sigrun.runner.execute import encode_report, is_allowed, resolve
from sigrun.runner.jobs import Cause, ChildReport
from tests.kernel import jobs
from tests.kernel.support import ALLOWED


@pytest.mark.parametrize(
    ("module", "allowed", "expected"),
    [
        ("jobs.imports", ("jobs.",), True),
        ("jobs", ("jobs.",), True),
        ("jobs_old.imports", ("jobs.",), False),
        ("myapp.tasks", ("myapp.tasks",), True),
        ("myapp.tasks.nightly", ("myapp.tasks",), True),
        ("myapp.tasks_old", ("myapp.tasks",), False),
        ("myapp", ("myapp.tasks",), False),
        ("other", ("jobs.", "other"), True),
        ("anything", (), False),
        ("anything", ("",), False),
        ("anything", (".",), False),
    ],
)
def test_allow_list_matches_whole_module_names(
    module: str, allowed: tuple[str, ...], expected: bool
) -> None:
    assert is_allowed(module, allowed) is expected


def test_resolve_returns_the_function() -> None:
    assert resolve("tests.kernel.jobs:add", ALLOWED) is jobs.add


def test_resolve_follows_a_dotted_attribute_path() -> None:
    assert resolve("tests.kernel.jobs:Tasks.double", ALLOWED) is jobs.Tasks.double


@pytest.mark.parametrize(
    ("func", "error", "message"),
    [
        ("tests.kernel.jobs", FunctionNotFound, "is not of the form 'package.module:function'"),
        ("tests.kernel.jobs:", FunctionNotFound, "is not of the form"),
        (
            "os:system",
            FunctionNotAllowed,
            "module 'os' is not in the runner's allowed modules ('tests.kernel.jobs')",
        ),
        (".jobs:add", FunctionNotAllowed, "module '.jobs' is not in the runner's allowed"),
        (
            "tests.kernel.jobs:getcwd",
            FunctionNotAllowed,
            "'tests.kernel.jobs:getcwd' is defined in module 'posix', which is not in the"
            " runner's allowed modules (it was only imported into an allowed one)",
        ),
        (
            "tests.kernel.jobs:os.system",
            FunctionNotAllowed,
            "reaches into module 'os' through an attribute",
        ),
        ("tests.kernel.jobs:nope", FunctionNotFound, "'tests.kernel.jobs' has no attribute 'nope'"),
        (
            "tests.kernel.jobs:Tasks.triple",
            FunctionNotFound,
            "'tests.kernel.jobs:Tasks' has no attribute 'triple'",
        ),
        (
            "tests.kernel.jobs:NOT_CALLABLE",
            FunctionNotFound,
            "'tests.kernel.jobs:NOT_CALLABLE' is a int, not callable",
        ),
    ],
)
def test_resolve_refuses_with_a_reason(func: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        resolve(func, ALLOWED)
    assert message in str(raised.value)


def test_module_that_fails_to_import_is_function_not_found_with_the_error() -> None:
    with pytest.raises(FunctionNotFound) as raised:
        resolve("tests.kernel.broken_jobs:run", ("tests.kernel.",))
    assert str(raised.value) == (
        "importing module 'tests.kernel.broken_jobs' failed:"
        " RuntimeError: database unreachable at import time"
    )


def test_missing_dependency_of_a_job_module_is_named() -> None:
    with pytest.raises(FunctionNotFound) as raised:
        resolve("tests.kernel.needs_missing_dependency:run", ("tests.kernel.",))
    assert str(raised.value) == (
        "importing module 'tests.kernel.needs_missing_dependency' failed: ModuleNotFoundError:"
        " No module named 'sigrun_test_not_installed_dependency'"
    )


@pytest.mark.parametrize(
    "report",
    [
        ChildReport(ok=True),
        ChildReport(ok=True, result={"rows": 3, "windows": ["00:00", "00:15"]}),
        ChildReport(
            ok=False,
            cause=Cause.EXCEPTION,
            exc_type="ValueError",
            exc_message="bad ü",
            traceback="Traceback (most recent call last):\n...",
        ),
        ChildReport(ok=False, cause=Cause.BAD_ARGUMENTS, exc_type="BadArguments", exc_message="x"),
    ],
)
def test_report_round_trips_through_child_report_from_json(report: ChildReport) -> None:
    assert ChildReport.from_json(encode_report(report)) == report


@pytest.mark.parametrize(
    ("result", "stored"),
    [
        ({1, 2}, "{1, 2}"),
        (math.nan, "nan"),
        ({(1, 2): "tuple key"}, "{(1, 2): 'tuple key'}"),
    ],
)
def test_result_that_is_not_plain_json_is_stored_as_repr(result: object, stored: str) -> None:
    report = ChildReport(ok=True, result=result)  # type: ignore[arg-type]
    assert ChildReport.from_json(encode_report(report)).result == stored
