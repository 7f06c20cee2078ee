"""Drop the indexes on Message.ticket and TicketEvent.ticket alone: message_ticket_idx (ticket, id) and
one_event_per_ticket_seq (ticket, seq) start with the same column and serve every lookup by ticket, so these
only cost each INSERT (two messages and two events for an update answered by the bot).

Only the indexes go, without a lock that stops writes (CONCURRENTLY on PostgreSQL): Django's own AlterField would
also drop and re-add each foreign key, checking every row of the two largest tables while holding them."""

import django.db.models.deletion
from django.db import migrations, models

# (table, index) as Django named them when it created the foreign keys.
INDEXES = [
    ("tickets_message", "tickets_message_ticket_id_a1134910"),
    ("tickets_ticketevent", "tickets_ticketevent_ticket_id_b572d14b"),
]


def _concurrently(schema_editor):
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def drop_indexes(apps, schema_editor):
    for _table, index in INDEXES:
        schema_editor.execute(f'DROP INDEX{_concurrently(schema_editor)} IF EXISTS "{index}"')


def create_indexes(apps, schema_editor):
    for table, index in INDEXES:
        schema_editor.execute(
            f'CREATE INDEX{_concurrently(schema_editor)} IF NOT EXISTS "{index}" ON "{table}" ("ticket_id")'
        )


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("tickets", "0005_ticket_list_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="ticket",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="tickets.ticket",
                    ),
                ),
                migrations.AlterField(
                    model_name="ticketevent",
                    name="ticket",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="tickets.ticket",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
        ),
    ]
