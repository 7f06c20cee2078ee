"""Drop the indexes on Message.ticket and TicketEvent.ticket alone: message_ticket_idx (ticket, id) and
one_event_per_ticket_seq (ticket, seq) start with the same column and serve every lookup by ticket, so these
only cost each INSERT (two messages and two events for an update answered by the bot).

Only the indexes go, without a lock that stops writes (CONCURRENTLY on PostgreSQL): Django's own AlterField would
also drop and re-add each foreign key, checking every row of the two largest tables while holding them."""

import django.db.models.deletion
from django.db import migrations, models

# (model, its ticket's related_name, its table, the index) as Django named it when it created the foreign key.
INDEXES = [
    ("message", "messages", "tickets_message", "tickets_message_ticket_id_a1134910"),
    ("ticketevent", "events", "tickets_ticketevent", "tickets_ticketevent_ticket_id_b572d14b"),
]


def _concurrently(schema_editor):
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def drop_indexes(apps, schema_editor):
    for *_, index in INDEXES:
        schema_editor.execute(f'DROP INDEX{_concurrently(schema_editor)} IF EXISTS "{index}"')


def create_indexes(apps, schema_editor):
    for *_, table, index in INDEXES:
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
                    model_name=model,
                    name="ticket",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name=related_name,
                        to="tickets.ticket",
                    ),
                )
                for model, related_name, *_ in INDEXES
            ],
            database_operations=[migrations.RunPython(drop_indexes, create_indexes)],
        ),
    ]
