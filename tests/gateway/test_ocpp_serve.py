"""``ampflow serve`` as a process speaks OCPP on its one port, over TLS when configured (security
profile 2: ``wss://`` and HTTP Basic auth), and stops cleanly with stations connected."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import ssl
import subprocess
import threading
from pathlib import Path

import httpx
import websockets

from tests.gateway.conftest import AMPFLOW, DEPOT, STARTUP_S, run_cli
from tests.gateway.ocpp_testkit import PASSWORD
from tests.gateway.test_ocpp_security import _self_signed


def test_serve_speaks_ocpp_over_tls(server_env: dict[str, str], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    env = {
        **server_env,
        "AMPFLOW_TLS_CERT_FILE": str(cert),
        "AMPFLOW_TLS_KEY_FILE": str(key),
        "AMPFLOW_TICK_S": "3600",
    }
    code, out, _ = run_cli(env, "keys", "create", "--role", "admin")
    assert code == 0
    admin = out.strip()
    proc = subprocess.Popen(
        [AMPFLOW, "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = ""
        found = threading.Event()

        def read() -> None:
            nonlocal line
            assert proc.stdout is not None
            for text in proc.stdout:
                if "serving on" in text and not found.is_set():
                    line = text
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        assert found.wait(STARTUP_S), "ampflow serve did not start"
        m = re.search(r"serving on https://([\d.]+:\d+) .*OCPP at wss://", line)
        assert m, line
        host = m.group(1)
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(
            base_url=f"https://{host}", headers={"X-API-Key": admin}, verify=context
        ) as c:
            assert c.post("/sites", json=DEPOT).status_code == 201
            body = {"id": "CP1", "site_id": "depot", "charger_id": "cp-1", "password": PASSWORD}
            assert c.post("/stations", json=body).status_code == 201
        auth = base64.b64encode(f"CP1:{PASSWORD}".encode()).decode()

        async def station() -> list[str]:
            async with websockets.connect(
                f"wss://{host}/ocpp/CP1",
                subprotocols=["ocpp1.6"],
                additional_headers={"Authorization": f"Basic {auth}"},
                ssl=context,
            ) as ws:
                boot = {"chargePointVendor": "Acme", "chargePointModel": "X"}
                await ws.send(json.dumps([2, "b1", "BootNotification", boot]))
                seen = []
                while "SetChargingProfile" not in seen:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if frame[0] == 3:
                        assert frame[2]["status"] == "Accepted"
                        continue
                    seen.append(frame[2])
                    if frame[2] == "GetConfiguration":
                        await ws.send(json.dumps([3, frame[1], {"configurationKey": []}]))
                    else:
                        await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
                return seen

        assert asyncio.run(station()) == ["GetConfiguration", "SetChargingProfile"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
