"""A ticket's rows are found by an index in every table that belongs to it: each composite index that starts
with ``ticket_id`` serves those lookups (the conversation, the event history's replay, a cascade delete) since
migration 0006 dropped the indexes on that column alone."""

import pytest
from django.db import connection

from tickets.models import Message, ReadCursor, TicketEvent

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", [Message, TicketEvent, ReadCursor])
def test_a_tickets_rows_are_found_by_an_index(model):
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)

    leading = {c["columns"][0] for c in constraints.values() if c["index"] or c["unique"]}
    assert "ticket_id" in leading, f"{model._meta.db_table} has no index that starts with ticket_id"
