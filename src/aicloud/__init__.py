"""AI Cloud: a self-hostable control plane for a multi-tenant GPU cloud."""

__version__ = "0.1.0"
