"""A job module that starts a thread at import, as some SDKs do (metrics, tracing)."""

import threading
import time

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


def run() -> str:
    return "ok"
