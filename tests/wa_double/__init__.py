"""A local WhatsApp Web double for the tests: `python -m tests.wa_double --port PORT`."""

from .server import Settings, create_app

__all__ = ["Settings", "create_app"]
