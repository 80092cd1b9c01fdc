"""Fixtures shared by the API test modules."""

from tests.api.billing_world import billing_world  # noqa: F401 (the billing route tests' world)
