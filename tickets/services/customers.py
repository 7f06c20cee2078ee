"""Customers: the people writing to the bot, found or created by their Telegram user id."""

from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from ..models import Customer
from . import rows
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

# Whether the row returned was inserted rather than updated: PostgreSQL leaves xmax 0 only on a row version
# no transaction has locked, which the update branch of ON CONFLICT always does. SQLite (development, one
# writer at a time) says False, which only costs a new customer the lookups of an existing one.
_INSERTED = {"postgresql": "xmax = 0"}

# One statement, whichever branch it takes: the profile is kept up to date, and the row stays locked until the
# transaction ends (ON CONFLICT DO UPDATE locks it as FOR NO KEY UPDATE does: no key column changes).
_COLUMNS = ", ".join(PROFILE_FIELDS)
_UPDATES = ", ".join(f"{name} = EXCLUDED.{name}" for name in PROFILE_FIELDS)
_UPSERT = (
    f"INSERT INTO {Customer._meta.db_table} (telegram_user_id, {_COLUMNS}, created_at, last_reply_seq) "
    "VALUES (%s, %s, %s, %s, %s, %s, 0) "
    f"ON CONFLICT (telegram_user_id) DO UPDATE SET {_UPDATES} RETURNING {{columns}}, {{inserted}}"
)


def get_or_create_customer(profile):
    """The customer for a Telegram user, created on first contact and kept up to date with their profile;
    returns (customer, created).

    The customer's row stays locked until the caller's transaction ends: everything that changes a
    customer's tickets or their chat's outbox locks the customer first, then the ticket (see lock_customer).
    A concurrent first message of the same user waits for this one's insert, then updates that row.
    """
    ((row,),) = rows.in_turn(upsert_statement(profile))
    return customer_from_row(row)


def upsert_statement(profile):
    """``get_or_create_customer``'s statement, to send with others (rows.in_turn); ``customer_from_row`` reads
    the row it returns."""
    values = storable({name: getattr(profile, name) or "" for name in PROFILE_FIELDS}).values()
    table = Customer._meta.db_table
    sql = _UPSERT.format(columns=rows.columns(Customer, table), inserted=_INSERTED.get(connection.vendor, "FALSE"))
    return sql, [profile.user_id, *values, rows.moment(timezone.now())]


def customer_from_row(row):
    """(customer, created) from the row ``upsert_statement`` returned."""
    *customer, created = row
    return rows.load(Customer, customer), bool(created)
