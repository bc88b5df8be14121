"""The hposvc service's HTTP API (FastAPI) and its Ray Serve deployment."""

from api.app import create_app

__all__ = ["create_app"]
