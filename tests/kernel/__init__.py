"""Real-kernel tests: real fork, real signals, real cgroup OOM kills (some need root)."""
