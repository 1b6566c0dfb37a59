"""Pure computation: topology, real-time allocator, horizon scheduler, charging profiles.

Nothing here does I/O or imports a web, protocol or database library.
"""

from ampflow.engine.allocator import Allocation, AllocatorState, allocate
from ampflow.engine.errors import AmpflowError, ProblemError, TopologyError
from ampflow.engine.profiles import ChargingRateUnit, OcppVersion, charging_schedule
from ampflow.engine.scheduler import (
    Schedule,
    ScheduleProblem,
    Sessions,
    SolveStatus,
    UnmetReason,
    solve_schedule,
)
from ampflow.engine.topology import (
    ChargerKind,
    ChargerSpec,
    NodeSpec,
    RowKind,
    SiteSpec,
    Topology,
    compile_topology,
)
from ampflow.engine.units import a_from_kw, kw_from_a

__all__ = [
    "Allocation",
    "AllocatorState",
    "AmpflowError",
    "ChargerKind",
    "ChargerSpec",
    "ChargingRateUnit",
    "NodeSpec",
    "OcppVersion",
    "ProblemError",
    "RowKind",
    "Schedule",
    "ScheduleProblem",
    "Sessions",
    "SiteSpec",
    "SolveStatus",
    "Topology",
    "TopologyError",
    "UnmetReason",
    "a_from_kw",
    "allocate",
    "charging_schedule",
    "compile_topology",
    "kw_from_a",
    "solve_schedule",
]
