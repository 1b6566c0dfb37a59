"""The OCPP 1.6J / 2.0.1 central system: stations in, charging profiles out.

``ampflow serve`` mounts :class:`OcppGateway` in the API app, so stations connect to
``ws://HOST:PORT/ocpp/{station_id}`` (``wss://`` with TLS configured). The modules:

=================  ===========================================================================
``server``         the WebSocket endpoint: subprotocol, unknown ids, HTTP Basic auth
``protocol``       the receive path both versions share: CallErrors, rate limit, responses
``v16``, ``v201``  one thin ChargePoint per version (handlers -> domain events) and its calls
``events``         domain events and meter values in canonical units
``station``        one station across its connections: events -> store, sink, control loop
``outbound``       one queue per station: timeout, bounded retry, recorded outcome
``sink``           the control loop's limits as profiles: safe ordering and verification
``ordering``       the safe-ordering bookkeeping (pure, property-tested)
``capabilities``   what a station can do, and the per-model quirk table
``profiles``       version-neutral profile specs and composite schedules
``store``          the database reads and writes of the gateway
``writer``         group commit of many small writes
``gateway``        the whole: stations, wiring into the app, commands
=================  ===========================================================================
"""

from ampflow.gateway.ocpp.capabilities import Capabilities, Quirk
from ampflow.gateway.ocpp.gateway import GatewayCommands, OcppGateway
from ampflow.gateway.ocpp.ordering import Answer, Ledger
from ampflow.gateway.ocpp.outbound import CommandStatus, Outcome
from ampflow.gateway.ocpp.profiles import ProfilePurpose, ProfileSpec
from ampflow.gateway.ocpp.sink import Flag, ProfileSink

__all__ = [
    "Answer",
    "Capabilities",
    "CommandStatus",
    "Flag",
    "GatewayCommands",
    "Ledger",
    "OcppGateway",
    "Outcome",
    "ProfilePurpose",
    "ProfileSink",
    "ProfileSpec",
    "Quirk",
]
