"""Example job modules for sigrun; the example JobQueue allows the prefix ``jobs.``."""
