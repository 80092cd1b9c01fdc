"""The REST API edge: parses, authorizes and calls services. No business rules here."""

from aicloud.api.app import create_app

__all__ = ["create_app"]
