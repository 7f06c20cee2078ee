"""``python -m bench.session``: two staff users logged in, for the bench's WebSocket clients (the watchers'
agent, and a colleague who types); prints ``{"cookie", "typist_cookie"}`` (each session cookie's
``name=value``). Run with the bench's environment."""

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402


def session_cookie(username):
    agent, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": True})
    client = Client()
    client.force_login(agent)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


if __name__ == "__main__":
    print(json.dumps({"cookie": session_cookie("bench-agent"), "typist_cookie": session_cookie("bench-typist")}))
