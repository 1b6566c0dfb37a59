"""The engine is pure computation: importing it pulls in no web, protocol or database library."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("fastapi", "ocpp", "websockets", "sqlalchemy", "pydantic", "pyomo", "starlette")


def test_engine_imports_no_io_library() -> None:
    code = (
        "import sys, ampflow.engine, ampflow.engine.profiles, ampflow.engine.scheduler; "
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_is_curated() -> None:
    import ampflow.engine as engine

    assert "solve_schedule" in engine.__all__
    assert all(hasattr(engine, name) for name in engine.__all__)
