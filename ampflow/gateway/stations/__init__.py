"""Simulated charge points: real OCPP 1.6J and 2.0.1 clients over WebSockets.

They behave like real chargers: they store the charging profiles they receive per stack level
and purpose, compute the composite schedule and never draw above it; they reject invalid
profiles as the specification requires; they answer GetCompositeSchedule, ClearChargingProfile,
remote start and stop, TriggerMessage, configuration and Reset (a reboot). Their EVs come from
a scenario's sessions, in simulated time at a configurable speed-up. Quirks of real chargers
(W only, ignoring numberPhases, no smart charging, forgetting profiles) can be switched on.

* :class:`StationConfig`, :class:`Quirk`, :class:`OcppVersion`: what a station is;
* :class:`SimulatedStation`, :class:`SimClock`: one station at run time;
* :func:`fleet_from_scenario`, :func:`run_fleet`: the stations of a scenario's site.
"""

from ampflow.gateway.stations.config import OcppVersion, Quirk, StationConfig, StationConfigError
from ampflow.gateway.stations.core import ConnectorStatus, EvPlan, StationCore
from ampflow.gateway.stations.fleet import Fleet, fleet_from_scenario, run_fleet
from ampflow.gateway.stations.profiles import Kind, Period, Profile, ProfileStore, Purpose
from ampflow.gateway.stations.runtime import ProfileEvent, SimClock, SimulatedStation

__all__ = [
    "ConnectorStatus",
    "EvPlan",
    "Fleet",
    "Kind",
    "OcppVersion",
    "Period",
    "Profile",
    "ProfileEvent",
    "ProfileStore",
    "Purpose",
    "Quirk",
    "SimClock",
    "SimulatedStation",
    "StationConfig",
    "StationConfigError",
    "StationCore",
    "fleet_from_scenario",
    "run_fleet",
]
