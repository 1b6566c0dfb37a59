"""The OpenADR 2.0b VEN, on openleadr's ``OpenADRClient``.

:class:`Ven20` registers with the VTN (``oadrQueryRegistration``, ``oadrCreatePartyRegistration``;
a venID provisioned out of band is sent along), registers one TELEMETRY_USAGE report with a
real-power data point per site, syncs the VTN's events, then polls at the period the VTN gave at
registration. Every ``oadrDistributeEvent`` goes through the
:class:`~ampflow.gateway.openadr.processor.EventProcessor`: it answers ``optIn`` or ``optOut`` in
the ``oadrCreatedEvent`` the client sends before its next poll, honours modifications
(``on_update_event``) and cancellations, and treats an event the VTN stopped listing as
withdrawn. The VTN picks the telemetry cadence in its ``oadrCreateReport``; values are the
sites' charging power in kW (``powerReal``, siScale ``k``).

Security: without ``tls`` the VEN speaks unsigned HTTP (``allow_insecure``, development only).
With ``tls`` it uses its certificate and key as TLS client certificate and to sign every
message, checks the VTN's certificate against ``ca_file``, and accepts only messages signed by
the certificate with ``vtn_fingerprint``.

If registration fails (VTN down, refused), the VEN tries again with backoff; it never stops
``ampflow serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from openleadr import OpenADRClient, enums, objects

from ampflow.gateway.openadr.config import VenConfig
from ampflow.gateway.openadr.events import parse_event_20
from ampflow.gateway.openadr.mapping import BadEventError
from ampflow.gateway.openadr.processor import EventProcessor, Opt

__all__ = ["Ven20"]

logger = logging.getLogger(__name__)

# openleadr sets its logger to INFO at import and logs whole payloads there.
logging.getLogger("openleadr").setLevel(logging.WARNING)

_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Ven20:
    """One OpenADR 2.0b VEN; see the module notes.

    Parameters
    ----------
    config : VenConfig
    processor : EventProcessor
    site_power_kw : callable
        ``await site_power_kw(site_id)``: the site's power now [kW], for telemetry.
    """

    def __init__(
        self,
        config: VenConfig,
        processor: EventProcessor,
        *,
        site_power_kw: Callable[[str], Awaitable[float]],
    ) -> None:
        self.config = config
        self.processor = processor
        self.site_power_kw = site_power_kw
        self.client: Any = None
        self.registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Register (retrying in the background until it succeeds) and start polling."""
        self._task = asyncio.create_task(self._register(), name=f"ven20-{self.config.name}")

    async def stop(self) -> None:
        """Stop polling and close the connection."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            await _close(self.client)
            self.client = None
        self.registered.clear()
        self.processor.close()

    @property
    def ven_id(self) -> str | None:
        """The venID the VTN assigned (or confirmed)."""
        return None if self.client is None else self.client.ven_id

    @property
    def poll_period(self) -> timedelta | None:
        """The polling period the VTN asked for at registration."""
        return None if self.client is None else self.client.poll_frequency

    async def _register(self) -> None:
        attempt = 0
        while True:
            client = self._make_client()
            try:
                await client.run()
            except (OSError, ValueError, RuntimeError) as exc:
                logger.warning("VEN %s: registration failed: %s", self.config.name, exc)
            if client.registration_id:
                self.client = client
                self.registered.set()
                logger.info(
                    "VEN %s: registered with %s as venID %s, polling every %s",
                    self.config.name,
                    self.config.vtn_url,
                    client.ven_id,
                    client.poll_frequency,
                )
                return
            await _close(client)
            delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
            attempt += 1
            logger.warning(
                "VEN %s: not registered with %s; retrying in %.0f s",
                self.config.name,
                self.config.vtn_url,
                delay,
            )
            await asyncio.sleep(delay)

    def _make_client(self) -> Any:
        cfg = self.config
        tls: dict[str, Any] = {}
        if cfg.tls is not None:
            tls = {
                "cert": str(cfg.tls.cert_file),
                "key": str(cfg.tls.key_file),
                "ca_file": str(cfg.tls.ca_file),
                "vtn_fingerprint": cfg.tls.vtn_fingerprint,
                "passphrase": (
                    cfg.tls.passphrase.get_secret_value() if cfg.tls.passphrase else None
                ),
                "check_hostname": cfg.tls.check_hostname,
            }
        client = OpenADRClient(
            ven_name=cfg.ven_name,
            vtn_url=cfg.vtn_url,
            ven_id=cfg.ven_id,
            show_fingerprint=False,
            **tls,
        )
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_event)
        client.add_hook("after_parse_xml", self._after_parse)
        self._add_telemetry(client)
        return client

    def _add_telemetry(self, client: Any) -> None:
        cfg = self.config
        # A copy: openleadr's MEASUREMENTS are shared objects that add_report modifies.
        power = dataclasses.replace(enums.MEASUREMENTS.ACTIVE_POWER, scale="k")
        rate = objects.SamplingRate(
            min_period=timedelta(seconds=cfg.telemetry_min_s),
            max_period=timedelta(seconds=cfg.telemetry_max_s),
            on_change=False,
        )
        for b in cfg.sites:
            client.add_report(
                callback=self._telemetry(b.site_id),
                resource_id=b.resource,
                measurement=power,
                report_name=enums.REPORT_NAME.TELEMETRY_USAGE,
                report_specifier_id=f"ampflow-{cfg.name}-telemetry",
                r_id=f"{b.resource}-power",
                sampling_rate=rate,
                report_duration=timedelta(seconds=cfg.telemetry_max_s),
                unit="W",
                scale="k",
            )

    def _telemetry(self, site_id: str) -> Callable[[], Awaitable[float]]:
        async def read() -> float:
            return await self.site_power_kw(site_id)

        return read

    # -- events -----------------------------------------------------------------------------

    async def _on_event(self, event: dict[str, Any]) -> str:
        """openleadr's ``on_event`` / ``on_update_event``: the answer for one event."""
        event_id = str((event.get("event_descriptor") or {}).get("event_id", "?"))
        try:
            parsed = parse_event_20(event)
        except BadEventError as exc:
            return (await self.processor.reject(event_id, str(exc))).opt.value
        try:
            answer = await self.processor.handle(parsed)
        except Exception:  # the library's callback boundary: this event only is opted out of
            logger.exception("VEN %s: event %r failed", self.config.name, event_id)
            return Opt.OUT.value
        return answer.opt.value

    async def _after_parse(self, message_type: str, payload: dict[str, Any]) -> None:
        """2.0b lists every pending and active event in each ``oadrDistributeEvent``: an
        event the VTN no longer lists is withdrawn."""
        if message_type != "oadrDistributeEvent":
            return
        events = payload.get("events") or []
        present = {
            str(e["event_descriptor"]["event_id"])
            for e in events
            if isinstance(e, dict) and isinstance(e.get("event_descriptor"), dict)
        }
        await self.processor.cancel_missing(present)


async def _close(client: Any) -> None:
    """Stop an openleadr client, also one that never connected."""
    if client.scheduler.running:
        client.scheduler.shutdown(wait=False)
    if client.report_queue_task is not None:
        client.report_queue_task.cancel()
    if client.client_session is not None and not client.client_session.closed:
        await client.client_session.close()
