"""``python -m bench.session``: a staff user logged in, for the bench's WebSocket clients; prints
``{"user_id", "cookie"}`` (the session cookie's ``name=value``). Run with the bench's environment."""

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402

if __name__ == "__main__":
    agent, _ = get_user_model().objects.get_or_create(username="bench-agent", defaults={"is_staff": True})
    client = Client()
    client.force_login(agent)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    print(json.dumps({"user_id": agent.pk, "cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}))
