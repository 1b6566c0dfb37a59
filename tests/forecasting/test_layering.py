"""The forecasting package sits below scenarios and gateway: it imports neither."""

from __future__ import annotations

import subprocess
import sys

import ampflow.forecasting as forecasting


def test_forecasting_imports_neither_scenarios_nor_gateway() -> None:
    code = (
        "import sys, ampflow.forecasting; "
        "print(','.join(m for m in sys.modules "
        "if m.startswith(('ampflow.scenarios', 'ampflow.gateway', 'fastapi', 'sqlalchemy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_is_curated() -> None:
    assert sorted(forecasting.__all__) == sorted(set(forecasting.__all__))
    assert all(hasattr(forecasting, name) for name in forecasting.__all__)
    assert {"SessionForecaster", "evaluate", "fit_before", "moer_forecast_at"} <= set(
        forecasting.__all__
    )
