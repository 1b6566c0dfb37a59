"""OpenADR: Ampflow as a VEN of utility VTNs, for OpenADR 2.0b and 3.1.

Utilities send demand-response events and prices; each VEN turns them into signals in the same
store as API-posted DR events (an import or export cap in kW, or a price series), the control
loop re-plans at once, and the VEN answers (opt in or out) and reports site power back.

=================  ===========================================================================
``mapping``        the signal mapping as pure functions: SIMPLE levels, kW caps, prices,
                   units, randomised starts, ramp-up, overlapping events
``events``         2.0b (openleadr) and 3.1 (JSON) events -> protocol-neutral events
``config``         ``[[openadr.vens]]``: VTN, identity, credentials, program, rules, sites
``store``          the database reads and writes of the VENs
``processor``      what both VENs do with an event: map, store, notify, answer
``ven20``          the OpenADR 2.0b VEN on openleadr's ``OpenADRClient``
``ven3``           the OpenADR 3.1 VEN on ``openadr3-client``, webhooks or polling
``service``        the VENs inside ``ampflow serve``
=================  ===========================================================================

The protocol modules (``ven20``, ``ven3``, ``service``) import their libraries and are not
imported here.
"""

from ampflow.gateway.openadr.config import OpenAdrSettings, Protocol, SiteBinding, VenConfig
from ampflow.gateway.openadr.mapping import (
    BadEventError,
    CannotHonourError,
    OadrEvent,
    ProgramRules,
    SiteLimits,
    map_event,
)

__all__ = [
    "BadEventError",
    "CannotHonourError",
    "OadrEvent",
    "OpenAdrSettings",
    "ProgramRules",
    "Protocol",
    "SiteBinding",
    "SiteLimits",
    "VenConfig",
    "map_event",
]
