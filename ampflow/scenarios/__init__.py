"""Scenario replay: real session data, site models and replays through the engine."""

from ampflow.scenarios.acn import caltech_site, day_sessions, read_acn
from ampflow.scenarios.demo import DemoResult, caltech_demo_problem, replay_day

__all__ = [
    "DemoResult",
    "caltech_demo_problem",
    "caltech_site",
    "day_sessions",
    "read_acn",
    "replay_day",
]
