"""A job module that prints while it is imported."""

print("noisy: connected to the warehouse")


def run() -> str:
    return "ok"
