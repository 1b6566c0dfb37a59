"""Speed and quality benchmarks; each is ``python -m benchmarks.NAME --json``."""
