"""Customers: the people writing to the bot, found or created by their Telegram user id."""

from dataclasses import dataclass

from django.db import transaction

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
    """The customer for a Telegram user, created on first contact and kept up to date with their profile.

    The customer's row stays locked until the caller's transaction ends: everything that changes a
    customer's tickets or their chat's outbox locks the customer first, then the ticket (see lock_customer).
    """
    fields = storable(
        {
            "first_name": profile.first_name or "",
            "last_name": profile.last_name or "",
            "username": profile.username or "",
            "language_code": profile.language_code or "",
        }
    )
    with transaction.atomic():
        # get_or_create retries the lookup (locking) when a concurrent first message inserted the row first.
        customer, created = Customer.objects.select_for_update(no_key=True).get_or_create(
            telegram_user_id=profile.user_id, defaults=fields
        )
        if not created and any(getattr(customer, name) != value for name, value in fields.items()):
            Customer.objects.filter(pk=customer.pk).update(**fields)
            for name, value in fields.items():
                setattr(customer, name, value)
    return customer
