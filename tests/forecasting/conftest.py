"""Fixtures for the forecasting tests."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.forecasting.synthetic import synthetic_sessions


@pytest.fixture(scope="session")
def sessions() -> pd.DataFrame:
    return synthetic_sessions()
