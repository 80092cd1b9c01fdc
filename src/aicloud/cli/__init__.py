"""The ``aicloud`` command line."""
