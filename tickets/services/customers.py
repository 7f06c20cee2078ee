"""Customers: the people writing to the bot, found or created by their Telegram user id."""

from dataclasses import dataclass

from ..models import Customer
from .base import storable


@dataclass(frozen=True)
class TelegramProfile:
    """Who wrote to the bot, as Telegram describes them."""

    user_id: int
    first_name: str = ""
    last_name: str = ""
    username: str = ""
    language_code: str = ""


def get_or_create_customer(profile):
    """The customer for a Telegram user, created on first contact and kept up to date with their profile."""
    fields = storable(
        {
            "first_name": profile.first_name or "",
            "last_name": profile.last_name or "",
            "username": profile.username or "",
            "language_code": profile.language_code or "",
        }
    )
    # get_or_create retries the lookup when a concurrent first message inserted the row first.
    customer, created = Customer.objects.get_or_create(telegram_user_id=profile.user_id, defaults=fields)
    if not created and any(getattr(customer, name) != value for name, value in fields.items()):
        Customer.objects.filter(pk=customer.pk).update(**fields)
        for name, value in fields.items():
            setattr(customer, name, value)
    return customer
