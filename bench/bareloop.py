"""The floor: the least a fork-per-job runner can do per job.

Take a payload with (B)LMOVE, fork, call the function in the child, waitpid,
then one pipelined acknowledgement (LREM from the in-flight list, HSET the job's
state and end time).  Three Redis commands and two round trips per job.  The
job's module is imported once, in this process, before the first fork.

Nothing else: no timeouts, no output capture, no report of a result or an
exception, no classification of the ending, no retries, no heartbeat, no
logging.  Everything sigrun does beyond this is what it costs.  It reads the
payloads sigrun's client enqueues (``{"id", "func": "module:function", "args",
"kwargs"}``), so both run the same jobs from the same queue; the key names are
given on the command line, so this file does not import sigrun.

    python bench/bareloop.py URL PENDING INFLIGHT JOB_PREFIX --path DIR [--burst]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import redis


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("url", "pending", "inflight", "job_prefix"):
        parser.add_argument(name)
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args()
    sys.path[:0] = args.path
    r = redis.Redis.from_url(args.url)
    functions: dict[str, Callable[..., Any]] = {}
    gc.freeze()  # as sigrun does: the child's GC never walks (so never copies) our heap
    while True:
        if args.burst:
            payload = r.lmove(args.pending, args.inflight, "RIGHT", "LEFT")
            if payload is None:
                return 0
        else:
            payload = r.blmove(args.pending, args.inflight, 1, "RIGHT", "LEFT")
            if payload is None:
                continue
        job = json.loads(payload)
        func = functions.get(job["func"])
        if func is None:
            module, _, name = job["func"].partition(":")
            func = functions[job["func"]] = getattr(importlib.import_module(module), name)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                func(*job["args"], **job["kwargs"])
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        state = "succeeded" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        pipe = r.pipeline(transaction=False)
        pipe.lrem(args.inflight, 1, payload)  # type: ignore[arg-type]  # bytes: as it came
        pipe.hset(args.job_prefix + job["id"], mapping={"state": state, "ended_at": time.time()})
        pipe.execute()


if __name__ == "__main__":
    sys.exit(main())
