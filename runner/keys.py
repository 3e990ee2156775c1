"""The Redis key schema: the only place where sigrun builds a key name.

Every key starts with a prefix (default ``sigrun:``).  Keys that belong to one
queue carry the queue name in a hash tag, ``{queue}``, so that all of them live
in one Redis Cluster slot and a Lua script may touch them together.

Per queue ``q`` (hash-tagged)::

    sigrun:{q}:pending            list    job payloads (JSON); enqueue LPUSHes,
                                          runners take from the right (FIFO)
    sigrun:{q}:inflight:<runner>  list    payloads a runner has taken and not yet
                                          finished (reliable fetch)
    sigrun:{q}:runners            hash    runner id -> identity JSON, for every runner that may hold
                                          an in-flight list of this queue (the reaper's index)
    sigrun:{q}:delayed            zset    payload -> due time: retries waiting out their backoff
    sigrun:{q}:job:<id>           hash    state, payload, attempt, runner, timestamps,
                                          outcome, result, last record; expires a
                                          while after the job ends
    sigrun:{q}:failed             zset    job id -> time, for jobs whose final state
                                          is failed or dirty
    sigrun:{q}:history            stream  one record per failed or dirty attempt,
                                          capped (MAXLEN ~)
    sigrun:{q}:stats              hash    processed, succeeded, failed, dirty, retried counters

Global (not hash-tagged; each written by one command, never inside a script)::

    sigrun:queues                 set     every queue that has been enqueued to or worked on
    sigrun:runner:<runner>        hash    a live runner's heartbeat: identity, queues, current jobs;
                                          expires unless refreshed, so its absence means "lost"

Lua scripts that build per-queue keys themselves (because a job id is only
known after a pop) derive them from the ``{q}`` prefix passed in KEYS, which
keeps them in the same slot.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "sigrun:"


@dataclass(frozen=True)
class QueueKeys:
    """Keys of one queue."""

    prefix: str
    queue: str

    @property
    def base(self) -> str:
        """``sigrun:{q}:`` — the per-queue prefix Lua scripts extend."""
        return f"{self.prefix}{{{self.queue}}}:"

    @property
    def pending(self) -> str:
        return self.base + "pending"

    @property
    def delayed(self) -> str:
        return self.base + "delayed"

    @property
    def runners(self) -> str:
        return self.base + "runners"

    @property
    def failed(self) -> str:
        return self.base + "failed"

    @property
    def history(self) -> str:
        return self.base + "history"

    @property
    def stats(self) -> str:
        return self.base + "stats"

    def inflight(self, runner_id: str) -> str:
        return f"{self.base}inflight:{runner_id}"

    def job(self, job_id: str) -> str:
        return f"{self.base}job:{job_id}"


@dataclass(frozen=True)
class Keys:
    """Entry point: ``Keys().queue("imports").pending``."""

    prefix: str = DEFAULT_PREFIX

    def queue(self, name: str) -> QueueKeys:
        return QueueKeys(self.prefix, name)

    @property
    def queues(self) -> str:
        return self.prefix + "queues"

    def runner(self, runner_id: str) -> str:
        return f"{self.prefix}runner:{runner_id}"

    @property
    def runner_pattern(self) -> str:
        return f"{self.prefix}runner:*"
