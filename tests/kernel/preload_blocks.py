"""A job module whose import blocks, as one waiting on a database that never answers."""

import time

time.sleep(60)


def run() -> str:
    return "never"
