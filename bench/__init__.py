"""sigrun's benchmarks against RQ, Celery and a bare fork loop; run with ``bench/run``.

Modules: :mod:`bench.env` (machine, versions, the peers' virtualenv),
:mod:`bench.systems` (how each contender is enqueued to, started and stopped),
:mod:`bench.scenarios` (what is measured), :mod:`bench.reaction` (the
operator's reaction times, on the local control plane of ``tests/cluster``),
:mod:`bench.redisproxy` (counting round trips), :mod:`bench.report` (tables and target checks),
``bench/bareloop.py`` (the floor), ``bench/peers/`` (RQ and Celery drivers, run in
the peers' virtualenv) and ``bench/jobmods/`` (the job functions everyone runs).
"""
