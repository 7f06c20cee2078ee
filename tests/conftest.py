"""Shared fixtures. Tests that need a service shared across processes are marked needs_redis /
needs_postgres: they skip on the embedded defaults and fail instead when SUPPORTSITE_REQUIRE_SERVICES=1
(as in CI), so CI can never pass with them skipped."""

import os

import pytest
from django.conf import settings
from django.db import connection


def pytest_collection_modifyitems(config, items):
    require = os.environ.get("SUPPORTSITE_REQUIRE_SERVICES") == "1"
    has_postgres = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    missing = {"needs_redis": not settings.REDIS_URL, "needs_postgres": not has_postgres}
    for item in items:
        for marker, is_missing in missing.items():
            if item.get_closest_marker(marker) and is_missing:
                reason = f"{marker}: set {'REDIS_URL' if marker == 'needs_redis' else 'DATABASE_URL'}"
                if require:
                    item.add_marker(pytest.mark.usefixtures("_fail_missing_service"))
                    item.user_properties.append(("missing_service", reason))
                else:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def _fail_missing_service(request):
    reason = dict(request.node.user_properties)["missing_service"]
    pytest.fail(f"SUPPORTSITE_REQUIRE_SERVICES=1 but the service is not configured ({reason}).")


@pytest.fixture
def agent(django_user_model):
    return django_user_model.objects.create_user("agent", password="agent-password", is_staff=True)


@pytest.fixture
def other_agent(django_user_model):
    return django_user_model.objects.create_user("agent2", password="agent-password", is_staff=True)


@pytest.fixture
def is_postgres():
    return connection.vendor == "postgresql"
