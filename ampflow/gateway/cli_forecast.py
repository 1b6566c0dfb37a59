"""``ampflow forecast ...`` commands."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ampflow.engine.errors import AmpflowError
from ampflow.forecasting import ACN_TIMEZONE, evaluate
from ampflow.forecasting.features import check_sessions
from ampflow.scenarios.acn import read_acn

app = typer.Typer(help="Forecasters: fit and evaluate.", no_args_is_help=True)

# read_acn renames these file columns; errors name them as the file does.
_FILE_COLUMNS = {
    "'energy_kwh'": "'delivered_energy (kWh)'",
    "'requested_kwh'": "'requested_energy (kWh)'",
}

_FILE_ERRORS = (
    OSError,
    EOFError,
    UnicodeDecodeError,
    gzip.BadGzipFile,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
)


def _read_sessions(path: Path, option: str) -> pd.DataFrame:
    """Sessions of one file in the ACN column layout, or a usage error naming file and column."""
    try:
        df = read_acn(path)
        if len(df) == 0:
            raise AmpflowError(f"{path}: holds no session")
        check_sessions(df, source=str(path))
    except AmpflowError as exc:
        message = str(exc)
        for ours, theirs in _FILE_COLUMNS.items():
            message = message.replace(ours, theirs)
        raise typer.BadParameter(message, param_hint=option) from exc
    except _FILE_ERRORS as exc:
        raise typer.BadParameter(
            f"{path}: cannot be read as CSV sessions in the ACN layout ({exc})", param_hint=option
        ) from exc
    return df


def _fmt(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def _table(scores: dict[str, float | int | None], train: Path, test: Path) -> Table:
    s = scores
    table = Table(title=f"Session forecasts: trained on {train.name}, tested on {test.name}")
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column("driver's own", justify="right")
    table.add_column("historical median", justify="right")
    n_est, n_req, n_all = s["n_test_with_estimate"], s["n_test_with_request"], s["n_test"]
    rows: list[tuple[str, str, str, str]] = [
        (
            f"departure MAE [h], {n_est} sessions with an estimate",
            _fmt(s["departure_mae_h_model"]),
            _fmt(s["departure_mae_h_driver"]),
            _fmt(s["departure_mae_h_median"]),
        ),
        (
            f"departure MAE [h], all {n_all} sessions",
            _fmt(s["departure_mae_h_model_all"]),
            "-",
            _fmt(s["departure_mae_h_median_all"]),
        ),
        (
            f"energy MAE [kWh], all {n_all} sessions",
            _fmt(s["energy_mae_kwh_model"]),
            "-",
            _fmt(s["energy_mae_kwh_median"]),
        ),
        (
            f"energy MAE [kWh], {n_req} sessions with a request",
            _fmt(s["energy_mae_kwh_model_requested"]),
            _fmt(s["energy_mae_kwh_driver"]),
            "-",
        ),
    ]
    for key, value in s.items():
        if key.startswith("pinball_"):
            _, target, unit, lab = key.split("_")
            unit = {"kwh": "kWh"}.get(unit, unit)
            rows.append((f"pinball loss {target} [{unit}] at {lab}", _fmt(value), "-", "-"))
    rows.append(("share inside outer quantiles, dwell", _fmt(s["coverage_dwell"]), "-", "-"))
    rows.append(("share inside outer quantiles, energy", _fmt(s["coverage_energy"]), "-", "-"))
    rows.append(("training sessions", _fmt(s["n_train"]), "-", "-"))
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


@app.command("evaluate")
def evaluate_command(
    train: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help="Training sessions, ACN layout (.csv/.gz)"),
    ],
    test: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Test sessions, ACN layout")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    timezone: Annotated[str, typer.Option(help="Site time zone (IANA)")] = ACN_TIMEZONE,
    random_state: Annotated[int, typer.Option(help="Seed of the models")] = 0,
) -> None:
    """Fit the session forecaster on TRAIN and score it on TEST against the drivers' estimates.

    Departure errors are in hours, energy errors in kWh. The driver's own estimate is scored on
    the sessions that carry one (claimed in the app).
    """
    train_df = _read_sessions(train, "--train")
    test_df = _read_sessions(test, "--test")
    try:
        scores = evaluate(train_df, test_df, random_state=random_state, timezone=timezone)
    except AmpflowError as exc:
        hint = "--timezone" if str(exc).startswith("timezone") else None
        raise typer.BadParameter(str(exc), param_hint=hint) from exc
    if as_json:
        typer.echo(json.dumps({"train": str(train), "test": str(test), **scores}))
        return
    console = Console()
    console.print(_table(scores, train, test))
    improvement = scores["departure_improvement"]
    if improvement is not None:
        side = "below" if improvement >= 0 else "above"
        console.print(
            f"Model departure MAE is {100 * abs(float(improvement)):.1f} % {side} the drivers' "
            "own estimates."
        )
