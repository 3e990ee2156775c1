"""``sigrun``: the command line.  Arguments, logging set-up, named exit codes.

Every option also reads an environment variable (named in its help), so a pod
spec can configure a runner without a command line.  Subcommands of other
parts of sigrun (``sigrun operator``) plug in through the ``sigrun.commands``
entry-point group, so this module never imports them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sigrun.runner import client
from sigrun.runner.errors import ConfigError, PayloadError, SigrunError
from sigrun.runner.exits import format_bytes
from sigrun.runner.jobs import Cause, Record
from sigrun.runner.keys import DEFAULT_PREFIX, Keys
from sigrun.runner.logs import setup_logging
from sigrun.runner.policy import Backoff
from sigrun.runner.protocol import Retention, Store
from sigrun.runner.redisio import CONNECTION_ERRORS, connect, connect_async, redact

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the command ran and the answer is "no" (e.g. nothing to retry)
    USAGE = 2  # argparse's own code for bad arguments
    CONFIG = 3  # options that cannot work together
    REDIS_UNAVAILABLE = 4
    INTERRUPTED = 130


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _env_list(name: str) -> list[str]:
    raw = os.environ.get(name, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def _env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis",
        default=_env("SIGRUN_REDIS_URL", DEFAULT_REDIS_URL),
        metavar="URL",
        help="Redis URL [env SIGRUN_REDIS_URL; default %(default)s]",
    )
    parser.add_argument(
        "--redis-password",
        default=_env("SIGRUN_REDIS_PASSWORD"),
        metavar="PASSWORD",
        help="overrides a password in --redis; best from a Secret [env SIGRUN_REDIS_PASSWORD]",
    )
    parser.add_argument(
        "--prefix",
        default=_env("SIGRUN_PREFIX", DEFAULT_PREFIX),
        help="key prefix in Redis [env SIGRUN_PREFIX; default %(default)s]",
    )
    parser.add_argument(
        "--log-level",
        default=_env("SIGRUN_LOG_LEVEL", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="[env SIGRUN_LOG_LEVEL; default %(default)s]",
    )
    parser.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default=_env("SIGRUN_LOG_FORMAT", "plain"),
        help="plain lines, or one JSON object a line [env SIGRUN_LOG_FORMAT]",
    )


#: Commands this module defines; any other is looked up among the plugins.
BUILT_IN = frozenset({"work", "enqueue", "info", "failed", "retry", "job", "reap", "demo"})


def build_parser(*, plugins: bool = True) -> argparse.ArgumentParser:
    """The whole command line; ``plugins=False`` leaves out the entry-point commands.

    Loading a plugin imports its module (the operator's imports kopf and the
    Kubernetes client: half a second and some 35 MiB), which ``sigrun work``
    must not pay for.
    """
    parser = argparse.ArgumentParser(
        prog="sigrun",
        description=(
            "A job runner that forks one child per job and says why a job died: "
            "a child killed by a signal (the OOM killer above all) is recorded as a "
            "DirtyExit with its cause."
        ),
        epilog="Try 'sigrun demo' to watch an OOM-killed job being classified.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("work", help="run jobs from one or more queues")
    _add_common(p)
    p.add_argument(
        "-q",
        "--queue",
        action="append",
        default=None,
        help="queue to take jobs from; repeat for several, first has priority "
        "[env SIGRUN_QUEUES, comma-separated]",
    )
    p.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=int(_env("SIGRUN_CONCURRENCY", "1") or 1),
        help="children at once [env SIGRUN_CONCURRENCY; default %(default)s]",
    )
    p.add_argument(
        "--allow-module",
        action="append",
        default=None,
        metavar="PREFIX",
        help="module prefix job functions may come from, e.g. 'jobs.'; everything "
        "else is refused [env SIGRUN_ALLOW_MODULES, comma-separated]",
    )
    p.add_argument(
        "--path",
        action="append",
        default=None,
        help="directory to put on sys.path for job modules [env SIGRUN_PATH; default .]",
    )
    p.add_argument(
        "--burst",
        action="store_true",
        default=_env_flag("SIGRUN_BURST"),
        help="exit once every queue is empty, no retry waits for its backoff and no job runs "
        "[env SIGRUN_BURST]",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=float(_env("SIGRUN_GRACE_SECONDS", "30") or 30),
        help="seconds running jobs get to finish after SIGTERM before they are killed "
        "and requeued [env SIGRUN_GRACE_SECONDS; default %(default)s]",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=_float_or_none(_env("SIGRUN_JOB_TIMEOUT")),
        help="default job timeout in seconds; a job's own timeout wins "
        "[env SIGRUN_JOB_TIMEOUT; default none]",
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=float(_env("SIGRUN_BACKOFF_SECONDS", "10") or 10),
        help="first retry delay, doubled each attempt [env SIGRUN_BACKOFF_SECONDS; "
        "default %(default)s]",
    )
    p.add_argument(
        "--job-ttl",
        type=int,
        default=int(_env("SIGRUN_JOB_TTL", "86400") or 86400),
        help="seconds a finished job's data stays in Redis [env SIGRUN_JOB_TTL; "
        "default %(default)s]",
    )
    p.add_argument(
        "--history-max",
        type=int,
        default=int(_env("SIGRUN_HISTORY_MAX", "10000") or 10000),
        help="failure records kept per queue [env SIGRUN_HISTORY_MAX; default %(default)s]",
    )
    p.add_argument(
        "--heartbeat-ttl",
        type=int,
        default=int(_env("SIGRUN_HEARTBEAT_TTL", "30") or 30),
        help="seconds without a heartbeat after which this runner's jobs are "
        "recorded as RunnerLost [env SIGRUN_HEARTBEAT_TTL; default %(default)s]",
    )
    p.add_argument(
        "--reap-interval",
        type=float,
        default=float(_env("SIGRUN_REAP_INTERVAL", "30") or 30),
        help="seconds between this runner's looks for lost runners' jobs "
        "[env SIGRUN_REAP_INTERVAL; default %(default)s]",
    )
    p.add_argument(
        "--termination-log",
        default=_env("SIGRUN_TERMINATION_LOG"),
        help="file to keep the running job ids in, for Kubernetes' termination "
        "message [env SIGRUN_TERMINATION_LOG]",
    )
    p.add_argument(
        "--child-cgroup",
        default=_env("SIGRUN_CHILD_CGROUP"),
        help="memory cgroup directory each child joins [env SIGRUN_CHILD_CGROUP]",
    )
    p.add_argument(
        "--preload",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("SIGRUN_PRELOAD", default=True),
        help="import each allowed job module once, in the fork server, on its first job, "
        "so children start with it imported (as Resque and Celery load the app before "
        "forking).  --no-preload makes every child import it instead: for a module "
        "that starts threads or opens connections at import, which must not be forked "
        "[env SIGRUN_PRELOAD=0|1; default on]",
    )
    p.add_argument(
        "--no-fork-server",
        dest="fork_server",
        action="store_false",
        default=not _env_flag("SIGRUN_NO_FORK_SERVER"),
        help="fork children from the runner process itself instead of from a lean "
        "fork server (slower) [env SIGRUN_NO_FORK_SERVER]",
    )
    p.set_defaults(handler=cmd_work)

    p = sub.add_parser(
        "enqueue",
        help="put a job on a queue",
        description="Arguments are JSON values; anything that is not JSON is "
        "taken as a string (so 2026-01-01 is the string '2026-01-01'), except what "
        'starts like JSON ({, [ or ") and does not parse: that is an error.',
    )
    _add_common(p)
    p.add_argument("queue")
    p.add_argument("func", help="package.module:function")
    p.add_argument("args", nargs="*", help="positional arguments (JSON values)")
    p.add_argument(
        "--kwarg",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a keyword argument; repeat for several",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="attempts before the job ends failed or dirty (default %(default)s)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds before the job is killed")
    p.add_argument("--job-id", default=None, help="idempotent: no second job while this id lives")
    p.set_defaults(handler=cmd_enqueue)

    p = sub.add_parser("info", help="pending, running, processed, failed, dirty, workers, queues")
    _add_common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("failed", help="jobs that ended failed or dirty, newest first")
    _add_common(p)
    p.add_argument("--queue")
    p.add_argument(
        "--cause",
        type=_cause,
        metavar="CAUSE",
        help="only this cause, e.g. OOMKilled",
    )
    p.add_argument(
        "--history",
        action="store_true",
        help="every failed or dirty attempt of --queue, retried ones too",
    )
    p.add_argument("--limit", type=int, default=50, help="at most this many (default %(default)s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_failed)

    p = sub.add_parser("retry", help="requeue failed or dirty jobs with fresh attempts")
    _add_common(p)
    p.add_argument("job_id", nargs="?")
    p.add_argument("--queue", help="the job's queue (needed with JOB_ID if it is ambiguous)")
    p.add_argument("--all", action="store_true", help="every failed or dirty job")
    p.add_argument(
        "--cause",
        type=_cause,
        metavar="CAUSE",
        help="with --all: only jobs that ended with this cause, e.g. OOMKilled",
    )
    p.set_defaults(handler=cmd_retry)

    p = sub.add_parser("job", help="one job: state, attempts, timeline and its last record")
    _add_common(p)
    p.add_argument("job_id")
    p.add_argument("--queue", help="the job's queue (found by id when left out)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_job)

    p = sub.add_parser("reap", help="record the jobs of runners whose heartbeat expired")
    _add_common(p)
    p.add_argument(
        "--backoff",
        type=float,
        default=float(_env("SIGRUN_BACKOFF_SECONDS", "10") or 10),
        help="first retry delay for the jobs it records [env SIGRUN_BACKOFF_SECONDS; "
        "default %(default)s]",
    )
    p.set_defaults(handler=cmd_reap)

    p = sub.add_parser(
        "demo", help="the seed story: an import OOM-killed at 1h windows, fine at 15m"
    )
    _add_common(p)
    p.set_defaults(handler=cmd_demo)

    for entry in entry_points(group="sigrun.commands") if plugins else ():
        register: Callable[[Any], None] = entry.load()
        register(sub)
    return parser


def _float_or_none(raw: str | None) -> float | None:
    return float(raw) if raw else None


# -- commands ------------------------------------------------------------------


def cmd_work(args: argparse.Namespace) -> ExitCode:
    from sigrun.runner.config import WorkerConfig  # noqa: PLC0415 - only this command needs it
    from sigrun.runner.worker import Worker  # noqa: PLC0415

    for path in reversed(args.path or _env_list("SIGRUN_PATH") or ["."]):
        sys.path.insert(0, str(Path(path).resolve()))
    config = WorkerConfig(
        redis_url=args.redis,
        queues=tuple(args.queue or _env_list("SIGRUN_QUEUES")),
        concurrency=args.concurrency,
        allowed_modules=tuple(args.allow_module or _env_list("SIGRUN_ALLOW_MODULES")),
        burst=args.burst,
        grace_seconds=args.grace,
        default_timeout=args.timeout,
        backoff=Backoff(base_seconds=args.backoff),
        retention=Retention(job_ttl_seconds=args.job_ttl, history_max=args.history_max),
        heartbeat_ttl=args.heartbeat_ttl,
        heartbeat_interval=min(5.0, args.heartbeat_ttl / 3),
        reap_interval=args.reap_interval,
        prefix=args.prefix,
        termination_log=args.termination_log,
        child_cgroup=args.child_cgroup,
        fork_server=args.fork_server,
        preload=args.preload,
    )

    async def work() -> None:
        redis = connect_async(config.redis_url, password=args.redis_password)
        try:
            store = Store(redis, Keys(config.prefix), config.retention)
            await Worker(config, store).run()
        finally:
            await redis.aclose()

    asyncio.run(work())
    return ExitCode.OK


def _parse_value(raw: str) -> Any:
    """A JSON value, or the string itself when it is not JSON (so 2026-01-01 stays a date).

    A value that opens like a JSON object, array or string but does not parse is a
    typo, not a string: enqueued as one, the job would fail far from the mistake.
    """
    try:
        return json.loads(raw)
    except ValueError as e:
        if raw.lstrip()[:1] in ("{", "[", '"'):
            raise ConfigError(f"{raw!r} looks like JSON but is not ({e})") from None
        return raw


def _cause(raw: str) -> Cause:
    try:
        return Cause(raw)
    except ValueError:
        known = ", ".join(c.value for c in Cause)
        raise argparse.ArgumentTypeError(f"{raw!r} is not a cause; one of: {known}") from None


def cmd_enqueue(args: argparse.Namespace) -> ExitCode:
    kwargs = {}
    for item in args.kwarg:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--kwarg takes NAME=JSON, got {item!r}")
        kwargs[name] = _parse_value(value)
    redis = connect(args.redis, password=args.redis_password)
    job = client.make_job(
        args.queue,
        args.func,
        [_parse_value(a) for a in args.args],
        kwargs,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        job_id=args.job_id,
    )
    if client.enqueue_job(redis, job, Keys(args.prefix)):
        print(job.id)
        return ExitCode.OK
    print(f"{job.id} (already queued or running; not enqueued again)")
    return ExitCode.OK


def cmd_info(args: argparse.Namespace) -> ExitCode:
    info = client.info(connect(args.redis, password=args.redis_password), Keys(args.prefix))
    if args.json:
        print(json.dumps(dataclasses.asdict(info), indent=2))
        return ExitCode.OK
    given_up = sum(q.failed_jobs for q in info.queues)
    for name, value, unit in (
        ("pending", info.pending, "jobs waiting"),
        ("running", info.running, "jobs in a child now"),
        ("delayed", info.delayed, "jobs waiting for a retry"),
        ("processed", info.processed, "attempts ended"),
        ("failed", info.failed, "attempts that raised or could not start"),
        ("dirty", info.dirty, "attempts killed by a signal (DirtyExits)"),
        ("given up", given_up, "jobs that failed for good: sigrun failed lists them"),
        ("workers", info.workers, "runners heartbeating"),
        ("working", info.working, "runners with a job"),
    ):
        print(f"{name:<10} {value:<8} {unit}")
    if info.queues:
        print()
        print(
            _table(
                [
                    "QUEUE",
                    "PENDING",
                    "RUNNING",
                    "DELAYED",
                    "PROCESSED",
                    "FAILED",
                    "DIRTY",
                    "GIVEN UP",
                ],
                [
                    [
                        q.name,
                        q.pending,
                        q.running,
                        q.delayed,
                        q.processed,
                        q.failed,
                        q.dirty,
                        q.failed_jobs,
                    ]
                    for q in info.queues
                ],
            )
        )
        print("(PROCESSED, FAILED and DIRTY count attempts; GIVEN UP counts jobs)")
    return ExitCode.OK


def cmd_failed(args: argparse.Namespace) -> ExitCode:
    redis = connect(args.redis, password=args.redis_password)
    keys = Keys(args.prefix)
    if args.history:
        if not args.queue:
            raise ConfigError("--history needs --queue")
        records = client.history(redis, args.queue, count=args.limit, keys=keys)
        if args.cause:
            records = [r for r in records if r.cause is args.cause]
    else:
        records = client.failed(
            redis, queue=args.queue, cause=args.cause, limit=args.limit, keys=keys
        )
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in records], indent=2))
        return ExitCode.OK
    if not records:
        print("no failed jobs")
        return ExitCode.OK
    print(render_records(records))
    return ExitCode.OK


def render_records(records: Sequence[Record]) -> str:
    rows = [
        [
            r.job_id,  # whole: it is what `sigrun job` and `sigrun retry` take
            r.queue,
            r.func,
            r.cause.value if r.cause else "",
            str(r.attempt),
            format_bytes(r.peak_rss_bytes) if r.peak_rss_bytes else "",
            time.strftime("%H:%M:%S", time.localtime(r.failed_at)),
            r.message,
        ]
        for r in records
    ]
    return _table(["JOB", "QUEUE", "FUNC", "CAUSE", "TRY", "PEAK", "AT", "MESSAGE"], rows)


def cmd_job(args: argparse.Namespace) -> ExitCode:
    redis = connect(args.redis, password=args.redis_password)
    keys = Keys(args.prefix)
    queue = args.queue or client.find_queue(redis, args.job_id, keys)
    fields = client.job_state(redis, queue, args.job_id, keys) if queue else {}
    if not queue or not fields:
        print(f"no job {args.job_id} (never enqueued, or expired after it ended)")
        return ExitCode.FAILED
    record = Record.from_json(fields["record"]) if fields.get("record") else None
    steps = client.timeline(redis, queue, args.job_id, keys)
    if args.json:
        body = {
            "id": args.job_id,
            "queue": queue,
            "state": fields.get("state"),
            "attempt": int(fields.get("attempt", 1)),
            "func": fields.get("func"),
            "result": json.loads(fields["result"]) if fields.get("result") else None,
            "timeline": [{"state": s, "at": at} for s, at in steps],
            "record": json.loads(record.to_json()) if record else None,
        }
        print(json.dumps(body, indent=2))
        return ExitCode.OK
    print(f"job       {args.job_id}")
    print(f"queue     {queue}")
    print(f"func      {fields.get('func', '')}")
    print(f"state     {fields.get('state', '')} (attempt {fields.get('attempt', 1)})")
    if fields.get("result"):
        print(f"result    {fields['result']}")
    if steps:
        start = steps[0][1]
        print("timeline  " + " -> ".join(f"{s} +{at - start:.2f}s" for s, at in steps))
    if record:
        print(f"last      {record.message}")
        if record.traceback:
            print("traceback")
            for line in record.traceback.rstrip().splitlines()[-12:]:
                print(f"  {line}")
        if record.last_words:
            print("last words")
            for line in record.last_words[-5:]:
                print(f"  | {line}")
    return ExitCode.OK


def cmd_retry(args: argparse.Namespace) -> ExitCode:
    redis = connect(args.redis, password=args.redis_password)
    keys = Keys(args.prefix)
    if args.all:
        ids = client.retry_all(redis, queue=args.queue, cause=args.cause, keys=keys)
        print(f"requeued {len(ids)} job(s)")
        return ExitCode.OK
    if not args.job_id:
        raise ConfigError("give a JOB_ID or --all")
    queues = [args.queue] if args.queue else sorted(redis.smembers(keys.queues))
    for queue in queues:
        if redis.exists(keys.queue(queue).job(args.job_id)):
            if client.retry(redis, queue, args.job_id, keys):
                print(f"requeued {args.job_id} on {queue}")
                return ExitCode.OK
            print(f"{args.job_id} on {queue} is not failed or dirty; nothing to retry")
            return ExitCode.FAILED
    print(f"no job {args.job_id} found" + (f" on {args.queue}" if args.queue else ""))
    return ExitCode.FAILED


def cmd_reap(args: argparse.Namespace) -> ExitCode:
    from sigrun.runner.jobs import now  # noqa: PLC0415
    from sigrun.runner.reaper import reap  # noqa: PLC0415

    async def run() -> int:
        redis = connect_async(args.redis, password=args.redis_password)
        try:
            records = await reap(
                Store(redis, Keys(args.prefix)), backoff=Backoff(args.backoff), now=now()
            )
        finally:
            await redis.aclose()
        for record in records:
            print(f"{record.job_id} {record.queue} {record.func}: {record.message}")
        return len(records)

    count = asyncio.run(run())
    print(f"recorded {count} lost job(s)")
    return ExitCode.OK


def cmd_demo(args: argparse.Namespace) -> ExitCode:
    from sigrun.runner.demo import run_demo  # noqa: PLC0415

    explicit = "--redis" in sys.argv or "SIGRUN_REDIS_URL" in os.environ
    return ExitCode(run_demo(redis_url=args.redis if explicit else None))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header)), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        # The last column (usually a message) is not padded, so long text does not pad every row.
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in words if not word.startswith("-")), None)
    args = build_parser(plugins=command not in BUILT_IN).parse_args(words)
    setup_logging(args.log_level, args.log_format)
    try:
        code: int = args.handler(args)
    except (ConfigError, PayloadError) as e:
        print(f"sigrun: {e}", file=sys.stderr)
        return ExitCode.CONFIG
    except CONNECTION_ERRORS as e:
        print(f"sigrun: cannot reach Redis at {redact(args.redis)}: {e}", file=sys.stderr)
        return ExitCode.REDIS_UNAVAILABLE
    except SigrunError as e:
        print(f"sigrun: {e}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code


if __name__ == "__main__":
    sys.exit(main())
