"""tickets.services.rows: a row stored and loaded in plain SQL is the row the ORM stores and loads."""

import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from tickets.models import Customer, Message, Ticket, TicketEvent
from tickets.services import rows


def fields_of(instance):
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def loaded(model, pk):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {rows.columns(model, 'row')} FROM {model._meta.db_table} AS row WHERE row.id = %s", [pk]
        )
        return rows.load(model, cursor.fetchone())


def test_each_model_of_a_customer_message_is_stored_and_loaded_as_the_orm_does(db, agent):
    customer = Customer(telegram_user_id=5, first_name="Zoë", username="zoe")
    rows.insert(customer)
    ticket = Ticket(customer=customer, subject="Refund", assignee=agent)
    rows.insert(ticket)
    message = Message(
        ticket=ticket,
        direction=Message.Direction.OUT,
        author=agent,
        text="On it",
        attachment={"kind": "photo", "sizes": [1, 2], "caption": "ü"},
        client_msg_id=uuid.uuid4(),
        delivery_status=Message.DeliveryStatus.QUEUED,
        delivery_due_at=timezone.now(),
        outbox_seq=3,
    )
    rows.insert(message)
    event = TicketEvent(ticket=ticket, seq=1, kind="message", actor_kind="agent", actor=agent, data={"a": [None]})
    rows.insert(event)

    for instance in (customer, ticket, message, event):
        model = type(instance)
        assert not instance._state.adding
        stored = model.objects.get(pk=instance.pk)
        assert fields_of(instance) == fields_of(stored)  # defaults and auto_now_add filled in, as create() does
        assert fields_of(loaded(model, instance.pk)) == fields_of(stored)
        assert not loaded(model, instance.pk)._state.adding


def test_several_instances_are_stored_in_one_statement_each_with_the_key_of_its_own_row(db):
    customer = Customer(telegram_user_id=6)
    rows.insert(customer)
    ticket = Ticket(customer=customer)
    rows.insert(ticket)
    events = [
        TicketEvent(ticket=ticket, seq=seq, kind="ticket", actor_kind="system", data={"seq": seq}) for seq in (3, 1, 2)
    ]

    rows.insert(*events)

    assert [TicketEvent.objects.get(pk=event.pk).data for event in events] == [{"seq": 3}, {"seq": 1}, {"seq": 2}]


def test_statements_sent_in_turn_each_see_the_ones_before_and_return_their_rows_or_their_count(db):
    customer = Customer(telegram_user_id=7)
    rows.insert(customer)
    table = Customer._meta.db_table

    results = rows.in_turn(
        (f"UPDATE {table} SET first_name = %s WHERE id = %s", ["Ada", customer.pk]),
        (f"UPDATE {table} SET last_name = %s WHERE id = %s AND first_name = %s", ["King", customer.pk, "Ada"]),
        (f"SELECT first_name, last_name FROM {table} WHERE id = %s", [customer.pk]),
        (f"SELECT id FROM {table} WHERE id = %s", [customer.pk + 1]),
    )

    assert results == [1, 1, [("Ada", "King")], []]


@pytest.mark.django_db(transaction=True)
def test_several_statements_are_sent_in_turn_only_inside_a_transaction():
    with pytest.raises(RuntimeError, match="only inside a transaction"):
        rows.in_turn(("SELECT 1", []), ("SELECT 2", []))

    with transaction.atomic():
        assert rows.in_turn(("SELECT 1", []), ("SELECT 2", [])) == [[(1,)], [(2,)]]


@pytest.mark.django_db(transaction=True)
def test_an_error_in_turn_is_djangos_own_and_rolls_the_transaction_back_leaving_the_connection_usable():
    table = Customer._meta.db_table
    customer, other = Customer.objects.create(telegram_user_id=11), Customer.objects.create(telegram_user_id=12)

    with pytest.raises(IntegrityError), transaction.atomic():
        rows.in_turn(
            (f"UPDATE {table} SET first_name = %s WHERE id = %s", ["Ada", customer.pk]),
            (f"UPDATE {table} SET telegram_user_id = %s WHERE id = %s", [11, other.pk]),  # taken
            (f"UPDATE {table} SET last_name = %s WHERE id = %s", ["King", customer.pk]),
        )

    customer.refresh_from_db()
    assert (customer.first_name, customer.last_name) == ("", "")
    with transaction.atomic():
        assert rows.in_turn(("SELECT 1", []), ("SELECT 2", [])) == [[(1,)], [(2,)]]
