"""sigrun's operator: turns JobQueue resources into runner Deployments and reports runner deaths.

Imported as ``sigrun.operator`` (never as a top-level ``operator``: that name is
the standard library's).  It may import the runner's protocol, jobs and exits;
the runner never imports it.
"""
