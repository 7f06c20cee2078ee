"""Customers: the people writing to the bot, found or created by their Telegram user id."""

from dataclasses import dataclass

from django.utils import timezone

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


PROFILE_FIELDS = ("first_name", "last_name", "username", "language_code")

_TABLE = Customer._meta.db_table
# An UPDATE that changes no key column locks the row as FOR NO KEY UPDATE does (see services.base).
_UPDATE_PROFILE = (
    f"UPDATE {_TABLE} SET {', '.join(f'{name} = %s' for name in PROFILE_FIELDS)} "
    "WHERE telegram_user_id = %s RETURNING *"
)
_INSERT = (
    f"INSERT INTO {_TABLE} (telegram_user_id, {', '.join(PROFILE_FIELDS)}, created_at, last_reply_seq) "
    "VALUES (%s, %s, %s, %s, %s, %s, 0) ON CONFLICT (telegram_user_id) DO NOTHING RETURNING *"
)


def get_or_create_customer(profile):
    """The customer for a Telegram user, created on first contact and kept up to date with their profile;
    returns (customer, created).

    The customer's row stays locked until the caller's transaction ends: everything that changes a
    customer's tickets or their chat's outbox locks the customer first, then the ticket (see lock_customer).
    One statement for a customer we know; a new one takes two.
    """
    values = list(storable({name: getattr(profile, name) or "" for name in PROFILE_FIELDS}).values())
    for _ in range(3):
        customer = _first(Customer.objects.raw(_UPDATE_PROFILE, [*values, profile.user_id]))
        if customer is not None:
            return customer, False
        customer = _first(Customer.objects.raw(_INSERT, [profile.user_id, *values, timezone.now()]))
        if customer is not None:
            return customer, True
        # ON CONFLICT waited for a concurrent first message of the same user to commit its insert: update that.
    raise RuntimeError(f"Telegram user {profile.user_id}'s customer neither updates nor inserts.")


def _first(rows):
    return next(iter(rows), None)
