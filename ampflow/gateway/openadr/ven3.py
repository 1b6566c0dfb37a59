"""The OpenADR 3.1 VEN, on ``openadr3-client``.

:class:`Ven3` authenticates with OAuth2 client credentials (the token URL is discovered from
``GET /auth/server`` unless configured; no credentials means anonymous requests), finds its
program, and follows the program's events:

* **webhooks where the VTN offers them**: with a ``callback`` configured it serves a small
  HTTP(S) listener and creates a subscription (``EVENT`` and ``PROGRAM``, operations
  ``CREATE``/``UPDATE``/``DELETE``, with a random bearer token the listener checks). A VTN that
  refuses subscriptions leaves the VEN polling;
* **polling** every ``poll_s`` in any case (a safety net with webhooks): ``GET /events`` page by
  page. Each event is validated on its own (``openadr3-client``'s models, then
  :func:`~ampflow.gateway.openadr.events.parse_event_3`), so one bad event never hides the
  others. An event the VTN no longer lists, or deletes, is withdrawn: its caps are lifted.

OpenADR 3 has no opt-in or opt-out message; the VEN acknowledges through reports. A rejected or
opted-out event gets one report with an ``x-OPT_OUT`` payload carrying the reason. Events that
ask for reports (``reportDescriptors`` with ``USAGE``, ``DEMAND`` or ``READING``) get them: site
power is sampled every ``report_s`` and reported at the end of every event interval (every
15 minutes within longer ones) per site, or aggregated when the descriptor says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiohttp import web
from openadr3_client.oadr310.models.event.event import ExistingEvent
from openadr3_client.ven.http_factory import VirtualEndNodeHttpClientFactory
from openadr3_client.version import OADRVersion
from pydantic import ValidationError

from ampflow.gateway.db.base import utcnow
from ampflow.gateway.openadr.config import VenConfig
from ampflow.gateway.openadr.events import parse_event_3
from ampflow.gateway.openadr.mapping import BadEventError, OadrEvent
from ampflow.gateway.openadr.processor import EventProcessor, Opt

__all__ = ["Ven3"]

logger = logging.getLogger(__name__)

_PAGE = 50  # the 3.1 maximum page size
_SUB_INTERVAL = timedelta(minutes=15)  # longest report interval within a long event interval
_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_OPERATIONS = (["CREATE", "UPDATE", "DELETE"], ["POST", "PUT", "DELETE"])  # 3.1, then 3.0.1
_REPORTED = {"USAGE": "KWH", "DEMAND": "KW", "READING": "KW"}


@dataclass
class _ReportJob:
    """Reports one event asked for: its intervals and the samples of the open window."""

    event_id: str
    descriptors: list[dict[str, Any]]
    spans: list[tuple[datetime, datetime]]
    window: datetime | None = None  # start of the window being sampled
    samples: dict[str, list[float]] = field(default_factory=dict)  # resource -> kW
    sent: int = 0


class Ven3:
    """One OpenADR 3.1 VEN; see the module notes.

    Parameters
    ----------
    config : VenConfig
    processor : EventProcessor
    site_power_kw : callable
        ``await site_power_kw(site_id)``: the site's power now [kW], for reports.
    clock : callable, optional
    """

    def __init__(
        self,
        config: VenConfig,
        processor: EventProcessor,
        *,
        site_power_kw: Callable[[str], Awaitable[float]],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.processor = processor
        self.site_power_kw = site_power_kw
        self.clock = clock
        self.client: Any = None
        self.program: dict[str, Any] | None = None
        self.programs: dict[str, dict[str, Any]] = {}
        self.subscription_id: str | None = None
        self.callback_url: str | None = None
        self.connected = asyncio.Event()
        self.reports_sent = 0
        self._token = secrets.token_urlsafe(24)
        self._seen: dict[str, str] = {}  # event id -> digest of what was last processed
        self._jobs: dict[str, _ReportJob] = {}
        self._opted_out: dict[str, str] = {}  # event id -> digest reported as opted out
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, subscribe and poll in the background (retrying until the VTN answers)."""
        self._tasks.append(asyncio.create_task(self._run(), name=f"ven3-{self.config.name}"))
        self._tasks.append(
            asyncio.create_task(self._report_loop(), name=f"ven3-{self.config.name}-reports")
        )

    async def stop(self) -> None:
        """Stop polling and reporting, remove the subscription, close the listener."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.subscription_id is not None and self.client is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._unsubscribe), timeout=5.0)
            except (OSError, ValueError, TimeoutError) as exc:
                logger.warning("VEN %s: could not remove subscription: %s", self.config.name, exc)
            self.subscription_id = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.client is not None:
            _close_sessions(self.client)
        self.connected.clear()
        self.processor.close()

    @property
    def webhooks(self) -> bool:
        """Whether the VTN accepted the VEN's subscription."""
        return self.subscription_id is not None

    async def _run(self) -> None:
        attempt = 0
        while not self.connected.is_set():
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the VEN's top-level runner: keep retrying
                delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                attempt += 1
                logger.warning(
                    "VEN %s: cannot reach %s (%s); retrying in %.0f s",
                    self.config.name,
                    self.config.vtn_url,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        while True:
            self._wake.clear()
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the VEN's top-level runner: poll later
                logger.warning(
                    "VEN %s: polling %s failed: %s", self.config.name, self.config.vtn_url, exc
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_s)

    async def _connect(self) -> None:
        self.client = await asyncio.to_thread(self._make_client)
        await asyncio.to_thread(self._load_programs)
        if self.config.program is not None and self.program is None:
            raise LookupError(f"program {self.config.program!r} is not visible to this VEN")
        if self.config.callback is not None and self._runner is None:
            await self._listen()
        if self.callback_url is not None and self.subscription_id is None:
            self.subscription_id = await asyncio.to_thread(self._subscribe)
        self.connected.set()
        logger.info(
            "VEN %s: connected to %s, program %s, %s",
            self.config.name,
            self.config.vtn_url,
            None if self.program is None else self.program.get("id"),
            "webhooks and polling" if self.webhooks else f"polling every {self.config.poll_s:g} s",
        )

    def _make_client(self) -> Any:
        cfg = self.config
        verify: Path | bool = cfg.ca_file if cfg.ca_file is not None else True
        if cfg.auth is None:
            client = VirtualEndNodeHttpClientFactory.create_anonymous_http_ven_client(
                cfg.vtn_url,
                verify_vtn_tls_certificate=verify,
                allow_insecure_http=cfg.allow_insecure,
                version=OADRVersion.OADR_310,
            )
        else:
            client = VirtualEndNodeHttpClientFactory.create_http_ven_client(
                cfg.vtn_url,
                cfg.auth.client_id,
                cfg.auth.client_secret.get_secret_value(),
                cfg.auth.token_url or self._discover_token_url(),
                list(cfg.auth.scopes) or None,
                verify_vtn_tls_certificate=verify,
                allow_insecure_http=cfg.allow_insecure,
                version=OADRVersion.OADR_310,
            )
        if cfg.ca_file is not None:
            _pin_ca(client, str(cfg.ca_file))
        return client

    def _discover_token_url(self) -> str:
        """``GET /auth/server`` (done here rather than by the library, so the configured CA
        applies)."""
        verify: ssl.SSLContext | bool = True
        if self.config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.config.ca_file))
        r = httpx.get(f"{self.config.vtn_url.rstrip('/')}/auth/server", verify=verify, timeout=10)
        r.raise_for_status()
        url = r.json().get("tokenURL")
        if not isinstance(url, str) or not url:
            raise ValueError(f"GET /auth/server: expected a tokenURL, got {r.text[:200]!r}")
        return url

    # -- reading the VTN ----------------------------------------------------------------------

    def _get_all(self, path: str, params: dict[str, Any]) -> list[Any]:
        """Every object of a listing, page by page."""
        session, base = self.client.events.session, self.client.events.base_url
        out: list[Any] = []
        while True:
            r = session.get(f"{base}/{path}", params={**params, "skip": len(out), "limit": _PAGE})
            r.raise_for_status()
            page = r.json()
            if not isinstance(page, list):
                raise ValueError(f"GET /{path}: expected a list, got {type(page).__name__}")
            out.extend(page)
            if len(page) < _PAGE:
                return out

    def _load_programs(self) -> None:
        programs = [p for p in self._get_all("programs", {}) if isinstance(p, dict)]
        self.programs = {str(p.get("id")): p for p in programs}
        want = self.config.program
        if want is not None:
            self.program = next(
                (p for p in programs if want in (p.get("id"), p.get("programName"))), None
            )

    async def sync(self) -> None:
        """Poll: process new and changed events, withdraw the ones no longer listed."""
        params = {} if self.program is None else {"programID": self.program["id"]}
        started = self.clock()
        listed = await asyncio.to_thread(self._get_all, "events", params)
        present = set()
        for obj in listed:
            if isinstance(obj, dict) and obj.get("id") is not None:
                present.add(str(obj["id"]))
                await self._process(obj)
        async with self._lock:  # an event a webhook brought in meanwhile is not "missing"
            await self.processor.cancel_missing(present, before=started)
            for eid in [e for e in self._seen if e not in present]:
                self._seen.pop(eid, None)
                self._jobs.pop(eid, None)

    async def _process(self, obj: dict[str, Any]) -> None:
        """Validate, parse and hand one event (JSON) to the processor; never raises."""
        eid = str(obj.get("id"))
        if self.program is not None and obj.get("programID") != self.program.get("id"):
            return
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
        async with self._lock:
            if self._seen.get(eid) == digest:
                return
            self._seen[eid] = digest
            try:
                ExistingEvent.model_validate(obj)
                parsed = parse_event_3(obj, program=self._program_of(obj), now=self.clock())
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(x) for x in err["loc"])
                await self._opt_out(eid, digest, f"{where}: {err['msg']}")
                return
            except BadEventError as exc:
                await self._opt_out(eid, digest, str(exc))
                return
            answer = await self.processor.handle(parsed)
        if answer.opt is Opt.OUT:
            await self._opt_out(eid, digest, answer.reason, reject=False)
            return
        if parsed.cancelled:
            self._jobs.pop(eid, None)
            return
        self._track_reports(obj, parsed)

    def _program_of(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        if self.program is not None:
            return self.program
        return self.programs.get(str(obj.get("programID")))

    async def _opt_out(self, eid: str, digest: str, reason: str, *, reject: bool = True) -> None:
        if reject:
            await self.processor.reject(eid, reason)
        if self._opted_out.get(eid) == digest:
            return
        self._opted_out[eid] = digest
        body = {
            "eventID": eid,
            "clientName": self.config.ven_name,
            "reportName": "ampflow opt-out",
            "resources": [
                {
                    "resourceName": "AGGREGATED_REPORT",
                    "intervals": [
                        {"id": 0, "payloads": [{"type": "x-OPT_OUT", "values": [reason[:1000]]}]}
                    ],
                }
            ],
        }
        try:
            await asyncio.to_thread(self._post_report, body)
        except (OSError, ValueError) as exc:
            logger.warning("VEN %s: opt-out report for %r failed: %s", self.config.name, eid, exc)

    def _post_report(self, body: dict[str, Any]) -> None:
        # Through the library's authenticated session, not its NewReport model: in
        # openadr3-client 2.4.2 a 3.1 report's payloadDescriptors only accept
        # EVENT_PAYLOAD_DESCRIPTOR, while the 3.1 schema asks for REPORT_PAYLOAD_DESCRIPTOR.
        session, base = self.client.reports.session, self.client.reports.base_url
        r = session.post(f"{base}/reports", json=body)
        r.raise_for_status()
        self.reports_sent += 1

    # -- webhooks -----------------------------------------------------------------------------

    async def _listen(self) -> None:
        cb = self.config.callback
        assert cb is not None
        sock = socket.socket(socket.AF_INET6 if ":" in cb.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cb.host, cb.port))
        sock.listen(128)
        sock.setblocking(False)
        ctx = None
        if cb.cert_file is not None and cb.key_file is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cb.cert_file, cb.key_file)
        app = web.Application()
        app.router.add_post(urlsplit(cb.url).path or "/", self._webhook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=ctx).start()
        self._runner = runner
        self.callback_url = cb.url.replace("{port}", str(sock.getsockname()[1]))

    def _subscribe(self) -> str | None:
        session, base = self.client.subscriptions.session, self.client.subscriptions.base_url
        for ops in _OPERATIONS:
            body: dict[str, Any] = {
                "clientName": self.config.ven_name,
                "objectOperations": [
                    {
                        "objects": ["EVENT", "PROGRAM"],
                        "operations": ops,
                        "callbackUrl": self.callback_url,
                        "bearerToken": self._token,
                    }
                ],
            }
            if self.program is not None:
                body["programID"] = self.program["id"]
            r = session.post(f"{base}/subscriptions", json=body)
            if r.status_code in (400, 422):
                continue  # perhaps a 3.0.1 VTN: try its operation names
            if r.status_code >= 400:
                break
            sid = r.json().get("id")
            return None if sid is None else str(sid)
        logger.info(
            "VEN %s: the VTN offers no subscription (HTTP %d); polling every %g s",
            self.config.name,
            r.status_code,
            self.config.poll_s,
        )
        return None

    def _unsubscribe(self) -> None:
        session, base = self.client.subscriptions.session, self.client.subscriptions.base_url
        session.delete(f"{base}/subscriptions/{self.subscription_id}", timeout=5)

    async def _webhook(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self._token}":
            return web.json_response({"title": "Unauthorized", "status": 401}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"title": "Bad Request", "status": 400}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"title": "Bad Request", "status": 400}, status=400)
        otype, op, obj = body.get("objectType"), body.get("operation"), body.get("object")
        if otype == "EVENT" and isinstance(obj, dict) and obj.get("id") is not None:
            if op == "DELETE":
                eid = str(obj["id"])
                self._seen.pop(eid, None)
                self._jobs.pop(eid, None)
                await self.processor.cancel(eid, "deleted by the VTN")
            else:
                await self._process(obj)
        elif otype == "PROGRAM":
            await asyncio.to_thread(self._load_programs)
            self._wake.set()
        return web.json_response({}, status=200)

    # -- reports ------------------------------------------------------------------------------

    def _track_reports(self, obj: dict[str, Any], event: OadrEvent) -> None:
        wanted = [
            d
            for d in obj.get("reportDescriptors") or []
            if isinstance(d, dict) and d.get("payloadType") in _REPORTED
        ]
        if not wanted:
            self._jobs.pop(event.event_id, None)
            return
        spans = sorted({(iv.start, iv.end) for s in event.signals for iv in s.intervals})
        now = self.clock()
        spans = [(a, b) for a, b in spans if b > now]
        self._jobs[event.event_id] = _ReportJob(event.event_id, wanted, spans)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.report_s)
            if self.client is None:
                continue
            for job in list(self._jobs.values()):
                await self._report_step(job)
                if not job.spans:
                    self._jobs.pop(job.event_id, None)

    async def _report_step(self, job: _ReportJob) -> None:
        """Sample the open window, or report the windows that ended (each at most once)."""
        now = self.clock()
        while job.spans:
            start, end = job.spans[0]
            if now < start:
                return
            window = job.window or start
            window_end = min(end, window + _SUB_INTERVAL)
            if now < window_end:
                await self._sample(job)
                job.window = window
                return
            if job.samples:
                body = self._usage(job, window, window_end)
                try:
                    await asyncio.to_thread(self._post_report, body)
                    job.sent += 1
                except (OSError, ValueError) as exc:  # this window's report is lost
                    logger.warning(
                        "VEN %s: report for %r failed: %s", self.config.name, job.event_id, exc
                    )
            job.samples.clear()
            job.window = window_end if window_end < end else None
            if window_end >= end:
                job.spans.pop(0)

    async def _sample(self, job: _ReportJob) -> None:
        for b in self.config.sites:
            kw = await self.site_power_kw(b.site_id)
            job.samples.setdefault(b.resource, []).append(kw)

    def _usage(self, job: _ReportJob, start: datetime, end: datetime) -> dict[str, Any]:
        hours = (end - start).total_seconds() / 3600.0
        mean = {r: sum(v) / len(v) for r, v in job.samples.items() if v}
        aggregate = any(bool(d.get("aggregate")) for d in job.descriptors)
        if aggregate:
            mean = {"AGGREGATED_REPORT": sum(mean.values())}
        types = sorted({str(d["payloadType"]) for d in job.descriptors})
        descriptors = [
            {
                "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                "payloadType": t,
                "readingType": "DIRECT_READ",
                "units": _REPORTED[t],
            }
            for t in types
        ]
        return {
            "eventID": job.event_id,
            "clientName": self.config.ven_name,
            "reportName": f"ampflow {job.event_id} usage",
            "payloadDescriptors": descriptors,
            "resources": [
                {
                    "resourceName": resource,
                    "intervalPeriod": {
                        "start": start.isoformat(),
                        "duration": f"PT{(end - start).total_seconds():g}S",
                    },
                    "intervals": [
                        {
                            "id": job.sent,
                            "payloads": [
                                {
                                    "type": t,
                                    "values": [
                                        round(kw * hours, 6) if t == "USAGE" else round(kw, 4)
                                    ],
                                }
                                for t in types
                            ],
                        }
                    ],
                }
                for resource, kw in mean.items()
            ],
        }


_INTERFACES = ("auth", "events", "programs", "reports", "vens", "subscriptions", "notifiers")


def _sessions(client: Any) -> list[Any]:
    """The requests sessions of an openadr3-client VEN client, its OAuth sessions included."""
    out = []
    for name in _INTERFACES:
        session = getattr(getattr(client, name, None), "session", None)
        if session is None:
            continue
        out.append(session)
        manager = getattr(getattr(session, "auth", None), "_token_manager", None)
        oauth = getattr(manager, "oauth", None)
        if oauth is not None:
            out.append(oauth)
    return out


def _close_sessions(client: Any) -> None:
    for session in _sessions(client):
        session.close()


def _pin_ca(client: Any, ca_file: str) -> None:
    """Make every HTTP session of ``client`` verify the VTN against ``ca_file``.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override a session's own CA bundle
    (psf/requests#3829), and the library's OAuth token session gets no CA at all; both would
    silently ignore the configured ``ca_file``.
    """
    for session in _sessions(client):
        _pin_session(session, ca_file)


def _pin_session(session: Any, ca_file: str) -> None:
    merge = session.merge_environment_settings

    def merged(url: str, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        out = merge(url, proxies, stream, verify, cert)
        if verify is None or verify is True:
            out["verify"] = ca_file
        return out

    session.verify = ca_file
    session.merge_environment_settings = merged
