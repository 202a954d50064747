"""The session pod: one business location's WhatsApp Web session behind the seed's HTTP API."""

__version__ = "0.1.0"
