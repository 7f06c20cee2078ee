"""Housekeeping: old claims, task results, history and heartbeats pruned, on the workers' schedule and by
command; claims scoped to the bot, so neither another bot nor Telegram's random ids after a week of
silence can make a fresh update look like a redelivery."""

from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from bots.models import TelegramUpdate
from ops.models import WorkerHeartbeat
from tests.bots import factories
from tests.conftest import wait_until
from tickets import services
from tickets.models import Message, TicketEvent


def bot_id(server):
    return int(server.token.split(":")[0])


def claimed(bot, update_id, ago):
    claim = TelegramUpdate.objects.create(bot_id=bot, update_id=update_id, kind="message")
    TelegramUpdate.objects.filter(pk=claim.pk).update(received_at=timezone.now() - ago)


def inbound_texts():
    return set(Message.objects.filter(direction=Message.Direction.IN).values_list("text", flat=True))


def test_an_update_id_claimed_8_days_ago_is_new_and_one_claimed_an_hour_ago_a_duplicate(start_server):
    server = start_server()
    week_old = factories.update(3001, "a new question after a quiet week")
    recent = factories.update(3002, "a redelivery")
    claimed(bot_id(server), week_old["update_id"], ago=timedelta(days=8))
    claimed(bot_id(server), recent["update_id"], ago=timedelta(hours=1))

    assert server.post_update(week_old).status_code == 200
    assert server.post_update(recent).status_code == 200

    assert inbound_texts() == {"a new question after a quiet week"}
    assert TelegramUpdate.objects.get(update_id=week_old["update_id"]).received_at > timezone.now() - timedelta(hours=1)


def test_the_same_update_id_from_two_bots_on_one_database_is_two_updates(start_server):
    first, second = start_server(), start_server()
    update_id = factories.next_id()

    assert first.post_update(factories.update(3101, "to the first bot", update_id=update_id)).status_code == 200
    assert second.post_update(factories.update(3102, "to the second bot", update_id=update_id)).status_code == 200

    assert inbound_texts() == {"to the first bot", "to the second bot"}
    assert TelegramUpdate.objects.filter(update_id=update_id).count() == 2


def old(model, field, ago, **filters):
    model.objects.filter(**filters).update(**{field: timezone.now() - ago})


def test_the_housekeeping_command_prunes_what_is_past_its_retention(transactional_db, settings, capsys):
    settings.TELEGRAM_UPDATE_RETENTION_DAYS = 7
    settings.TASK_RESULT_RETENTION_DAYS = 7
    settings.TICKET_HISTORY_RETENTION_DAYS = 30
    claimed(1, 1, ago=timedelta(days=8))
    claimed(1, 2, ago=timedelta(days=6))
    customer, _ = services.get_or_create_customer(services.TelegramProfile(user_id=77, first_name="Cy"))
    ticket, _ = services.get_or_open_ticket(customer)
    services.queue_reply(ticket, "first", author=None)
    services.queue_reply(ticket, "second", author=None)
    old(TicketEvent, "created_at", timedelta(days=31), seq=1)
    finished_long_ago, finished_lately, *_ = DBTaskResult.objects.order_by("enqueued_at")
    DBTaskResult.objects.filter(pk__in=[finished_long_ago.pk, finished_lately.pk]).update(status="SUCCESSFUL")
    old(DBTaskResult, "finished_at", timedelta(days=8), pk=finished_long_ago.pk)
    old(DBTaskResult, "finished_at", timedelta(days=1), pk=finished_lately.pk)
    WorkerHeartbeat.objects.create(worker_id="gone", hostname="h", pid=1, beat_at=timezone.now() - timedelta(days=2))

    call_command("housekeeping")

    assert list(TelegramUpdate.objects.values_list("update_id", flat=True)) == [2]
    assert set(DBTaskResult.objects.values_list("pk", flat=True)) == {finished_lately.pk}
    ticket.refresh_from_db()
    # Only the event older than the retention went: every later one is kept.
    assert sorted(TicketEvent.objects.values_list("seq", flat=True)) == list(range(2, ticket.last_seq + 1))
    assert not WorkerHeartbeat.objects.exists()
    assert "Pruned 1 update claims." in capsys.readouterr().out


def test_the_worker_runs_housekeeping_on_its_schedule(start_worker, transactional_db):
    claimed(1, 1, ago=timedelta(days=8))
    claimed(1, 2, ago=timedelta(hours=1))

    worker = start_worker("1:test-token", HOUSEKEEPING_INTERVAL_SECONDS=3600)

    wait_until(lambda: not TelegramUpdate.objects.filter(update_id=1).exists(), message="the old claim pruned")
    assert TelegramUpdate.objects.filter(update_id=2).exists()
    wait_until(lambda: "Housekeeping pruned 1 update claims" in worker.log(), message="the housekeeping log line")
    assert WorkerHeartbeat.objects.count() == 1
