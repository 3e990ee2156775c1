"""kopf's entry points: decorators only, each a few lines handing over to a module.

* JobQueue created, changed or seen at start -> :func:`sigrun.operator.monitor.tick` at once
  (spec changes roll the Deployment without waiting for the timer);
* every few seconds per JobQueue -> the same tick (scaling, status, Events);
* a runner pod changed or vanished -> :mod:`sigrun.operator.pods` finds deaths,
  :func:`sigrun.operator.monitor.react` records them and posts their Events.

Expected trouble (a missing Secret, Redis down) never raises out of a tick: it
becomes ``Ready=False`` and a Warning Event.  What does raise is unexpected and
is retried by kopf with a delay (``kopf.TemporaryError`` semantics).
"""

from __future__ import annotations

from typing import Any

import kopf

from sigrun.operator import config, monitor, pods
from sigrun.operator.spec import GROUP, PLURAL, VERSION
from sigrun.runner.jobs import now

TICK_SECONDS = 2.0
RETRY_SECONDS = 10.0


def _ctx(memo: Any) -> monitor.Context:
    ctx: monitor.Context = memo["sigrun"]
    return ctx


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config.configure(settings, memo["config"])


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _tick(body, memo)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS, initial_delay=TICK_SECONDS)
async def every_few_seconds(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _tick(body, memo)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget(uid: str, memo: kopf.Memo, **_: Any) -> None:
    _ctx(memo).fleet.drop(uid)


@kopf.on.event("v1", "pods", labels={"app.kubernetes.io/name": "sigrun-runner"})
async def runner_pod(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    ctx = _ctx(memo)
    rt = pods.on_pod_event(ctx.fleet, event.get("type"), event["object"], now=now())
    if rt is not None:
        await monitor.react(ctx, rt, now=now())


async def _tick(body: kopf.Body, memo: kopf.Memo) -> None:
    try:
        await monitor.tick(_ctx(memo), body, now=now())
    except kopf.TemporaryError:
        raise
    except Exception as e:  # an API or Redis failure the tick did not expect: retry, no loop
        raise kopf.TemporaryError(f"{type(e).__name__}: {e}", delay=RETRY_SECONDS) from e
