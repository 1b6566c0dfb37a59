"""The HTTP API (FastAPI): ``create_app(settings)`` in :mod:`ampflow.gateway.api.main`."""

from ampflow.gateway.api.main import create_app

__all__ = ["create_app"]
