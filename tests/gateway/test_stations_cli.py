"""``ampflow simulate-stations`` and ``ampflow demo-live`` as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ampflow.gateway.cli import app
from tests.gateway.test_stations import Csms

AMPFLOW = str(Path(sys.executable).parent / "ampflow")


@contextlib.contextmanager
def csms_thread() -> Iterator[Csms]:
    """The tiny central system on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        async with Csms() as csms:
            box["csms"] = csms
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20)
    try:
        csms = box["csms"]
        assert isinstance(csms, Csms)
        yield csms
    finally:
        stop = box["stop"]
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()


def simulate(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AMPFLOW, "simulate-stations", "--scenario", "caltech-week", "--url", url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def until(probe: object, timeout: float = 60.0) -> None:
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_simulate_stations_runs_a_scenario_day_and_stops_on_sigint() -> None:
    with csms_thread() as csms:
        proc = simulate(
            csms.url,
            "--version",
            "2.0.1",
            "--speed",
            "3600",
            "--start",
            "2019-10-08T08:00",
            "--hours",
            "10",
            "--quirk",
            "w_only=0.5",
            "--json",
        )
        try:
            until(lambda: len(csms.seen) == 54)
            # Simulated hours pass at one per second: the morning's EVs start transactions.
            until(lambda: sum(len(s.of("TransactionEvent")) for s in csms.seen.values()) >= 10)
            time.sleep(3.0)  # three simulated hours of charging
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stations"] == 54
    assert summary["transactions"] >= 10
    assert summary["energy_kwh"] > 50  # 10+ EVs at 6.656 kW for hours of simulated time
    assert summary["not_connected"] == {}
    assert "54 stations of site 'caltech' (OCPP 2.0.1)" in err
    boots = [s.of("BootNotification")[0] for s in csms.seen.values()]
    assert {b["charging_station"]["vendor_name"] for b in boots} == {"Ampflow"}
    started = [
        e
        for s in csms.seen.values()
        for e in s.of("TransactionEvent")
        if e["event_type"] == "Started"
    ]
    assert started
    assert all(e["id_token"]["id_token"].startswith("EV") for e in started)


@pytest.mark.slow
def test_simulate_stations_with_a_duration_reports_unreachable_servers() -> None:
    proc = simulate("ws://127.0.0.1:9/ocpp", "--stations", "2", "--duration", "1.5", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary.get("online", 0) == 0
    assert set(summary["not_connected"]) == {"CA-148", "CA-149"}
    assert all("Connect" in v or "refused" in v for v in summary["not_connected"].values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quirk", "sparkles=0.5"], "expected one of w_only"),
        (["--quirk", "w_only=2"], "expected a share in [0, 1], got 2.0"),
        (["--quirk", "w_only=lots"], "expected a share in [0, 1], got 'lots'"),
        (["--version", "2.1"], "expected 1.6 or 2.0.1, got '2.1'"),
        (["--stations", "0"], "greater than or equal to 1"),
        (["--register", "http://127.0.0.1:9"], "--register needs an API key"),
    ],
)
def test_simulate_stations_bad_options_are_named(args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        app, ["simulate-stations", "--scenario", "caltech-week", *args], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    text = re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)
    assert message in text


def test_simulate_stations_unknown_scenario_is_named() -> None:
    result = CliRunner().invoke(
        app, ["simulate-stations", "--scenario", "nowhere.yaml"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert "not a bundled scenario" in re.sub(r"[\s│]+", " ", result.output)


@pytest.mark.slow
def test_demo_live_holds_the_dr_cap_and_stops_cleanly(tmp_path: Path) -> None:
    """The main job, headless: the server, 54 stations, a DR event through the API."""
    proc = subprocess.run(
        [
            AMPFLOW,
            "demo-live",
            "--port",
            "0",
            "--duration",
            "40",
            "--dr-after",
            "15",
            "--speed",
            "120",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert "ampflow serve exited with code 0" in out
    cap = re.search(r"DR event \S+ posted through the API \(utility key\): cap ([\d.]+) kW", out)
    assert cap is not None, out
    samples = [
        (float(t), float(drawn), None if dr == "-" else float(dr))
        for t, drawn, dr in re.findall(
            r"t=\s*([\d.]+)s .*? drawn\s+([\d.]+) kW .*? DR cap (\S+) kW", out
        )
    ]
    assert len(samples) > 20
    capped = [(t, kw, dr) for t, kw, dr in samples if dr is not None]
    assert capped
    assert {dr for _, _, dr in capped} == {float(cap.group(1))}
    first = capped[0][0]
    # A few seconds after the event reached the site, what the stations draw is under the cap.
    settled = [kw for t, kw, _ in capped if t >= first + 5]
    assert settled
    assert max(settled) <= float(cap.group(1)) + 0.05
    # The stations really charged: power was drawn before the event.
    assert max(kw for t, kw, dr in samples if dr is None) > 0
