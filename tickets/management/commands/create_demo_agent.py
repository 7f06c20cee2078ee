"""Create the demo agent that `make run` logs in with: a staff superuser "demo" with a random password."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import IntegrityError, transaction

USERNAME = "demo"
DESK_URL = f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8000')}/desk/"  # where `make run` serves


class Command(BaseCommand):
    help = (
        'Create the staff superuser "demo" with a random password and print its login, once. '
        "An existing demo user is left as it is."
    )

    def handle(self, *args, **options):
        password = secrets.token_urlsafe(16)
        try:
            # Create or fail on the unique username: two concurrent runs cannot both create it.
            with transaction.atomic():
                get_user_model().objects.create_superuser(USERNAME, email="", password=password)
        except IntegrityError:
            self.stdout.write(
                f'Demo agent "{USERNAME}" already exists; its password is unchanged '
                f"(reset it with `python manage.py changepassword {USERNAME}`). Log in at {DESK_URL}"
            )
            return
        self.stdout.write(f"Demo agent: {DESK_URL}  user: {USERNAME}  password: {password}")
