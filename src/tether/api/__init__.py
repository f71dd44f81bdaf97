"""The HTTP face: a FastAPI app over a :class:`tether.Tether`."""

from tether.api.app import create_app

__all__ = ["create_app"]
