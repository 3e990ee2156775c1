"""RQ, driven the way its documentation shows: enqueue, ``Worker.work(burst=True)``.

Runs in the peers' virtualenv (``python rq_driver.py COMMAND ...``); prints JSON
when it has something to say.  Job functions come from ``bench/jobmods``,
which the benchmark passes with ``--path``.

    enqueue URL SPEC      SPEC: JSON list of [function, args, count], enqueued in order
    work URL --kind fork|simple [--burst]
    latency URL COUNT STAMPS GAP   one stamp job at a time; prints [[enqueued_at, ended_at]...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job, JobStatus


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("enqueue", "work", "latency"))
    parser.add_argument("url")
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--kind", choices=("fork", "simple"), default="fork")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--path", action="append", default=[])
    args = parser.parse_args()
    sys.path[:0] = args.path
    redis = Redis.from_url(args.url)
    queue = Queue("default", connection=redis)
    if args.command == "enqueue":
        for func, func_args, count in json.loads(args.rest[0]):
            datas = [Queue.prepare_data(func, func_args) for _ in range(count)]
            for start in range(0, len(datas), 500):
                queue.enqueue_many(datas[start : start + 500])
    elif args.command == "work":
        worker_class = Worker if args.kind == "fork" else SimpleWorker
        worker_class([queue], connection=redis).work(burst=args.burst, logging_level="INFO")
    else:
        count, stamps, gap = int(args.rest[0]), args.rest[1], float(args.rest[2])
        times = []
        for _ in range(count):
            enqueued_at = time.time()
            job = queue.enqueue("benchjobs.stamp", stamps)
            while job.get_status(refresh=True) not in (JobStatus.FINISHED, JobStatus.FAILED):
                time.sleep(0.0005)
            ended = Job.fetch(job.id, connection=redis).ended_at
            times.append([enqueued_at, ended.timestamp() if ended else None])
            time.sleep(gap)
        print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
