"""Scenario replay: scenario files, a simulator, policies, xarray results, plots and sweeps.

The ``plot_*`` functions load matplotlib on first use only, so that importing the package (as the
gateway does) stays light.
"""

from typing import TYPE_CHECKING, Any

from ampflow.scenarios.acn import caltech_site, day_sessions, jpl_site, read_acn
from ampflow.scenarios.bundled import BUNDLED, build_bundled, bundled_scenario, resolve_scenario
from ampflow.scenarios.demo import DemoResult, caltech_demo_problem, replay_day
from ampflow.scenarios.format import Scenario, ScenarioError, load_scenario
from ampflow.scenarios.sweep import (
    SweepError,
    SweepSpec,
    load_sweep_spec,
    parse_sweep_spec,
    run_sweep,
    scale_scenario,
    sweep_table,
)

if TYPE_CHECKING:
    from ampflow.scenarios.plots import (
        plot_costs,
        plot_policies,
        plot_result,
        plot_sessions,
        plot_site_load,
    )

__all__ = [
    "BUNDLED",
    "DemoResult",
    "Scenario",
    "ScenarioError",
    "SweepError",
    "SweepSpec",
    "build_bundled",
    "bundled_scenario",
    "caltech_demo_problem",
    "caltech_site",
    "day_sessions",
    "jpl_site",
    "load_scenario",
    "load_sweep_spec",
    "parse_sweep_spec",
    "plot_costs",
    "plot_policies",
    "plot_result",
    "plot_sessions",
    "plot_site_load",
    "read_acn",
    "replay_day",
    "resolve_scenario",
    "run_sweep",
    "scale_scenario",
    "sweep_table",
]

_PLOTS = frozenset(
    {"plot_costs", "plot_policies", "plot_result", "plot_sessions", "plot_site_load"}
)


def __getattr__(name: str) -> Any:
    if name in _PLOTS:
        from ampflow.scenarios import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
