"""The README's example runs and does what it says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np


def test_readme_example_runs() -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    ns: dict[str, Any] = {}
    exec(blocks[0], ns)
    topo = ns["topo"]
    # The 25 kW DR cap at the grid connection holds, shared max-min fairly.
    np.testing.assert_allclose(ns["now"].p_kw, [8.8, 8.8, 7.4])
    assert (topo.A @ ns["now"].p_kw)[topo.total_row("depot")] <= 25 + 1e-9
    assert ns["plan"].status == "optimal"
    assert ns["profile"]["chargingRateUnit"] == "A"
