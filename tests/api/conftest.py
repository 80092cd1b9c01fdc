"""Fixtures shared by the API test modules."""

from tests.api.billing_world import billing_world  # noqa: F401 (the billing route tests' world)


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    config.addinivalue_line("markers", "access_settings(**kw): access settings of the "
                            "proxy tests' world (tests/api/test_access_proxy.py)")
