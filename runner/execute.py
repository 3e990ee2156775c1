"""The child's side of a job: set up, find the function, call it, report, ``os._exit``.

This module owns everything that happens inside the forked child:
:func:`start_child` gives it a process group of its own, the signal handlers a
fresh Python has, stdin from /dev/null and stdout/stderr into the output pipe
(line-buffered, so what it printed before a SIGKILL is not lost), faulthandler,
the configured cgroup and ``oom_score_adj``; :func:`child_main` resolves
``job.func`` against the allow-list, runs the function (awaiting it if it is a
coroutine function) and writes one :class:`ChildReport` as JSON to the report
file.  It never talks to Redis, and it never returns: whatever happens, the
child ends in ``os._exit`` so it cannot fall back into the parent's code (the
parent's event loop, its Redis connections, its ``atexit`` handlers).

Speed matters here: every page of the parent's memory the child writes to is
copied on that first write (a fault costing microseconds), so the child-side
code avoids touching what it does not need and the parent prepares what it can.
For the same reason this module does not import asyncio (nor anything that
imports threading, whose fork hooks cost every child time): the fork server
forks from a process without it, and a child imports asyncio only for a job
that returns a coroutine -- and then raises :data:`asyncio_hint`, so the fork
server can import it once for the children after it.

The allow-list (``allowed_modules``): an entry ending in ``.`` (``"jobs."``) allows
that package and every module below it; any other entry (``"myapp.tasks"``)
allows that exact module and the modules below it, but not ``myapp.tasks_old``.
An empty allow-list allows nothing.  The function found must also be *defined*
in an allowed module (its ``__module__``): ``jobs.x:run`` is refused when
``jobs.x`` merely did ``from subprocess import run``, and attribute paths may not
pass through a module (``jobs.x:os.system``).  Anyone who can write to the queue
chooses ``func``; the allow-list is what keeps that from being arbitrary code.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C half of signal, untyped
import contextlib
import faulthandler
import importlib
import inspect
import json
import mmap
import os
import signal
import sys
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

from sigrun.runner.cgroup import MemoryCgroup
from sigrun.runner.errors import FunctionNotAllowed, FunctionNotFound
from sigrun.runner.jobs import Cause, ChildReport, Job

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "OK_NONE",
    "ChildSetup",
    "child_main",
    "encode_report",
    "is_allowed",
    "resolve",
    "start_child",
]

EXIT_OK = 0  # the job returned; the report says so
EXIT_FAILED = 1  # the job raised or could not start; the report says why
EXIT_INTERNAL = 70  # EX_SOFTWARE: the child machinery itself broke (e.g. no report written)

# Caps on what one report carries, so one pathological exception cannot bloat Redis.
_MAX_MESSAGE = 16 * 1024
_MAX_TRACEBACK = 64 * 1024


def is_allowed(module_name: str, allowed_modules: Sequence[str]) -> bool:
    """Whether ``module_name`` falls under the allow-list (see the module docstring)."""
    for entry in allowed_modules:
        if not entry or entry == ".":
            continue  # an empty entry must not silently allow everything
        package = entry.rstrip(".")
        if module_name == package or module_name.startswith(package + "."):
            return True
    return False


def resolve(func: str, allowed_modules: Sequence[str]) -> Callable[..., Any]:
    """Import and return the callable named ``"package.module:attr[.attr]"``.

    Raises :class:`FunctionNotAllowed` outside the allow-list, and
    :class:`FunctionNotFound` when the module cannot be imported, an attribute is
    missing or the object is not callable.  Importing runs the module's top-level
    code, so call it where that is acceptable (the child, or a CLI check).
    """
    module_name, sep, attr_path = func.partition(":")
    if not sep or not module_name or not attr_path:
        raise FunctionNotFound(f"{func!r} is not of the form 'package.module:function'")
    if module_name.startswith(".") or not is_allowed(module_name, allowed_modules):
        allowed = ", ".join(repr(a) for a in allowed_modules if a) or "none"
        raise FunctionNotAllowed(
            f"module {module_name!r} is not in the runner's allowed modules ({allowed})"
        )
    try:
        # sys.modules first: a module the runner preloaded costs nothing here.
        obj: object = sys.modules.get(module_name) or importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise FunctionNotFound(
                f"no module named {module_name!r} (the runner imports job modules from its "
                "--path folders, by default the directory it was started in)"
            ) from e
        raise FunctionNotFound(f"importing module {module_name!r} failed: {_one_line(e)}") from e
    except Exception as e:
        raise FunctionNotFound(f"importing module {module_name!r} failed: {_one_line(e)}") from e
    walked = module_name
    for attr in attr_path.split("."):
        if walked != module_name and isinstance(obj, types.ModuleType):
            raise FunctionNotAllowed(
                f"{func!r} reaches into module {obj.__name__!r} through an attribute;"
                " name the module itself before the ':'"
            )
        try:
            obj = getattr(obj, attr)
        except AttributeError as e:
            raise FunctionNotFound(f"{walked!r} has no attribute {attr!r}") from e
        walked = f"{walked}:{attr}" if walked == module_name else f"{walked}.{attr}"
    if isinstance(obj, types.ModuleType):
        raise FunctionNotAllowed(f"{func!r} is a module, not a function")
    if not callable(obj):
        raise FunctionNotFound(f"{func!r} is a {type(obj).__name__}, not callable")
    defined_in = getattr(obj, "__module__", None)
    if isinstance(defined_in, str) and not is_allowed(defined_in, allowed_modules):
        raise FunctionNotAllowed(
            f"{func!r} is defined in module {defined_in!r}, which is not in the runner's"
            " allowed modules (it was only imported into an allowed one)"
        )
    return obj


@dataclass(frozen=True)
class ChildSetup:
    """How each child prepares itself; built once, in the parent (see :meth:`of`)."""

    allowed_modules: tuple[str, ...]
    cgroup_procs: bytes | None  # the cgroup.procs file to join, if any
    oom_score_adj: bytes | None
    faulthandler: bool
    # The child's sys.stdout and sys.stderr, on fds 1 and 2, line-buffered.  Made
    # in the parent (never written there): making them in each child would cost
    # a copy-on-write fault for every page io's code touches.
    streams: tuple[TextIO, TextIO]
    # The signals whose handler the child must reset, when the parent knows them
    # for good (None: the child looks at every signal, and at the wakeup fd).
    signals: tuple[int, ...] | None = None

    @classmethod
    def of(
        cls,
        *,
        allowed_modules: tuple[str, ...],
        cgroup: MemoryCgroup | None = None,
        oom_score_adj: int | None = None,
        faulthandler: bool = True,
        settled: bool = False,
    ) -> ChildSetup:
        """The set-up for this parent's children.

        ``settled``: the parent is the fork server, whose signal handlers never
        change after this call and which has no wakeup fd.  Then the signals to
        reset are found once, here, and faulthandler is enabled in the parent
        itself (its handlers and stack are inherited, and write to the child's
        fd 2), so no child spends time on either.
        """
        signals = None
        if settled:
            signals = tuple(sig for sig in _SIGNALS if _fresh_handler(sig) is not None)
            if faulthandler:
                _enable_faulthandler()
        return cls(
            allowed_modules=allowed_modules,
            cgroup_procs=os.fsencode(cgroup.path / "cgroup.procs") if cgroup else None,
            oom_score_adj=None if oom_score_adj is None else str(oom_score_adj).encode(),
            faulthandler=faulthandler and not settled,
            streams=(_line_buffered(1), _line_buffered(2)),
            signals=signals,
        )


def _enable_faulthandler() -> None:
    faulthandler.enable(2)


def start_child(
    setup: ChildSetup,
    job: Job | None,
    *,
    output_fd: int,
    report_fd: int,
    close_fds: Sequence[int],
    job_fd: int = -1,
) -> NoReturn:
    """In a child just forked: set up, run ``job`` with :func:`child_main`, ``os._exit``.

    Without a ``job`` this child is a spare, forked ahead of need: it sets itself
    up, then waits for its job's JSON on ``job_fd`` (until end of file) and runs
    it.  It imports nothing ahead: a module it guessed would be charged to whatever
    job came, clock and all (a slow import timing out someone else's job).  A spare
    that gets end of file without a job was not needed and exits 0.
    """
    try:
        os.setpgid(0, 0)
        _reset_signals(setup.signals)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        for fd in (devnull, output_fd, *close_fds):
            os.close(fd)
        # The old stream objects stay referenced: freeing one that owned fd 1 or 2
        # would close our pipe.
        _kept_streams.extend((sys.stdout, sys.stderr))
        sys.stdout, sys.stderr = setup.streams
        if setup.faulthandler:
            faulthandler.enable(2)  # a crash writes its Python stack as last words
        if setup.cgroup_procs is not None:
            _write_file(setup.cgroup_procs, str(os.getpid()).encode())
        if setup.oom_score_adj is not None:
            with contextlib.suppress(OSError):  # raising it needs no privilege; lowering does
                _write_file(b"/proc/self/oom_score_adj", setup.oom_score_adj)
        if job is None:
            job = _receive_job(job_fd)
        child_main(job, setup.allowed_modules, report_fd)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(2, f"sigrun: child set-up failed: {type(e).__name__}: {e}\n".encode())
    finally:
        os._exit(EXIT_INTERNAL)


def _receive_job(job_fd: int) -> Job:
    chunks = []
    while chunk := os.read(job_fd, 65536):
        chunks.append(chunk)
    os.close(job_fd)
    if not chunks:
        os._exit(EXIT_OK)  # a spare nobody needed
    return Job.from_json(b"".join(chunks), queue="")


def child_main(job: Job, allowed_modules: Sequence[str], report_fd: int) -> NoReturn:
    """Run ``job`` in this (forked) process, report on ``report_fd``, and ``os._exit``.

    A ``SystemExit`` from the job (``sys.exit(n)``) is honoured as the process's
    exit code *without* a report, so the parent classifies it as ``ExitCode``:
    the job ended the process instead of returning.
    """
    code = EXIT_INTERNAL
    try:
        # fork() copied the parent's thread state, including "an event loop is
        # running in this thread" (the supervisor forks from inside its loop).
        # Python 3.11 does not clear it, and asyncio.run() would then refuse to
        # start; the parent's loop is unusable here anyway.
        aio = sys.modules.get("asyncio")
        if aio is not None:
            aio.events._set_running_loop(None)
        try:
            report = _run(job, allowed_modules)
        except SystemExit as e:
            code = _system_exit_code(e)
        else:
            _write_all(report_fd, OK_NONE if _is_plain_ok(report) else encode_report(report))
            code = EXIT_OK if report.ok else EXIT_FAILED
    except BaseException:
        # Only our own machinery gets here (a failing write, say): leave a trace
        # in the job's output, which the parent keeps as last words.
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _run(job: Job, allowed_modules: Sequence[str]) -> ChildReport:
    try:
        func = resolve(job.func, allowed_modules)
    except FunctionNotAllowed as e:
        return _refusal(Cause.FUNCTION_NOT_ALLOWED, e)
    except FunctionNotFound as e:
        return _refusal(Cause.FUNCTION_NOT_FOUND, e)
    # Call first, and only when a TypeError comes out ask inspect whether the
    # arguments fit the signature: inspect.signature costs more than a no-op job
    # in a freshly forked child (every object it touches is a copy-on-write fault),
    # and arguments that do not bind never reach the function's body anyway.
    try:
        result = func(*job.args, **job.kwargs)
        if inspect.iscoroutine(result):
            result = _run_coroutine(result)
    except SystemExit:
        raise
    except BaseException as e:  # the job's own failure, KeyboardInterrupt included
        misfit = _misfit(func, job) if isinstance(e, TypeError) else None
        if misfit is not None:
            return ChildReport(
                ok=False,
                cause=Cause.BAD_ARGUMENTS,
                exc_type=Cause.BAD_ARGUMENTS.value,
                exc_message=_cap(misfit, _MAX_MESSAGE),
            )
        return ChildReport(
            ok=False,
            cause=Cause.EXCEPTION,
            exc_type=_type_name(e),
            exc_message=_cap(_safe_str(e), _MAX_MESSAGE),
            traceback=_cap(traceback.format_exc(), _MAX_TRACEBACK, keep_end=True),
        )
    return ChildReport(ok=True, result=result)


def _run_coroutine(coroutine: Any) -> Any:
    if "asyncio" not in sys.modules and asyncio_hint is not None:
        asyncio_hint[0] = 1  # tell the fork server: later children want asyncio loaded
    import asyncio  # noqa: PLC0415 - only coroutine jobs need it (see the module docstring)

    return asyncio.run(coroutine)


#: Set by the fork server before it forks: one byte of memory shared with its
#: children, which a child sets when it had to import asyncio itself.
asyncio_hint: mmap.mmap | None = None


def _misfit(func: Callable[..., Any], job: Job) -> str | None:
    """Why ``job``'s arguments do not fit ``func``'s signature, or None if they do."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None  # no signature to check against: the TypeError stays the job's
    try:
        signature.bind(*job.args, **job.kwargs)
    except TypeError as e:
        return f"{job.func}{signature}: {e}"
    return None


def _refusal(cause: Cause, error: Exception) -> ChildReport:
    return ChildReport(ok=False, cause=cause, exc_type=cause.value, exc_message=str(error))


def encode_report(report: ChildReport) -> bytes:
    """The report as :meth:`ChildReport.from_json` reads it, built without ``asdict``.

    A result that is not plain JSON (a datetime, NaN, a dict with tuple keys) is
    replaced by its repr: a result never fails a job.
    """
    body: dict[str, object] = {
        "ok": report.ok,
        "result": report.result,
        "cause": report.cause.value if report.cause else None,
        "exc_type": report.exc_type,
        "exc_message": report.exc_message,
        "traceback": report.traceback,
    }
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError):
        body["result"] = _safe_repr(report.result)
        return json.dumps(body, separators=(",", ":")).encode()


#: The commonest report, a job that returned None, encoded ahead (in the parent) so
#: the child skips json's copy-on-write faults, and the parent its parsing.
OK_NONE = encode_report(ChildReport(ok=True))


def _is_plain_ok(report: ChildReport) -> bool:
    return report.ok and report.result is None  # "is": a result may have an odd __eq__


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _type_name(error: BaseException) -> str:
    cls = type(error)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<str() of {type(error).__name__} failed>"


def _one_line(error: BaseException) -> str:
    text = _safe_str(error).strip().replace("\n", " ")
    return f"{_type_name(error)}: {text}" if text else _type_name(error)


def _cap(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if keep_end:  # a traceback's end (the raise) matters most
        return f"… ({cut} characters cut)\n{text[cut:]}"
    return f"{text[:limit]}… ({cut} characters cut)"


def _system_exit_code(e: SystemExit) -> int:
    """Python's own rules: None -> 0, an int as is, anything else printed and 1."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    with contextlib.suppress(Exception):
        print(e.code, file=sys.stderr)
    return 1


_kept_streams: list[object] = []


def _reset_signals(only: tuple[int, ...] | None = None) -> None:
    """Give the child the handlers a fresh Python process has, not the runner's.

    Uses the C half of :mod:`signal` directly: the public wrappers convert every
    value to an enum, which in a freshly forked child costs ten times the rest.
    ``only``: the signals known (by a settled parent) to need it; None: look.
    """
    setsignal = _signal.signal
    if only is not None:
        for sig in only:
            setsignal(sig, _signal.default_int_handler if sig == _SIGINT else _signal.SIG_DFL)
        return
    # The runner's loop may have set a wakeup fd: a signal the job handles must
    # not write into the parent's event loop (asyncio would run the parent's handler).
    _signal.set_wakeup_fd(-1)
    for sig in _SIGNALS:
        fresh = _fresh_handler(sig)
        if fresh is not None:
            setsignal(sig, fresh)


def _fresh_handler(sig: int) -> Any:
    """The handler a fresh Python has for ``sig`` if this process has another; else None."""
    handler = _signal.getsignal(sig)
    if callable(handler):
        fresh = _signal.default_int_handler if sig == _SIGINT else _signal.SIG_DFL
        if handler is not fresh:
            return fresh
    return None


_SIGINT = int(signal.SIGINT)
# Signals whose handler Python can report (SIGKILL and SIGSTOP have none to reset).
_SIGNALS = tuple(
    int(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
)


def _line_buffered(fd: int) -> TextIO:
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


def _write_file(path: bytes, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` may write less than asked to a pipe; loop until all of it is out."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
