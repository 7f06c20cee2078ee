"""The task queue in plain SQL: each task's row stored with one INSERT, the same row django-tasks-db's own
backend stores, so the library's worker, results and queries read it as theirs; and each ready task claimed
by one worker only, in the library's order, with one UPDATE."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks import task_backends
from django_tasks_db.backend import DatabaseBackend as LibraryBackend
from django_tasks_db.compat import task_enqueued
from django_tasks_db.models import DBTaskResult

from bots.tasks import deliver_reply
from ops.task_backend import claim_next_task
from tests.tickets.test_services import run_at_once

# Every column but the two each enqueue makes anew.
COMPARED = [field.attname for field in DBTaskResult._meta.concrete_fields if field.name not in ("id", "enqueued_at")]


def stored(result):
    return DBTaskResult.objects.filter(pk=result.id).values(*COMPARED).get()


@pytest.mark.parametrize("later", [None, timedelta(days=1)], ids=["to run now", "to run later, with a priority"])
def test_a_task_is_stored_as_the_librarys_backend_stores_it_in_one_statement(db, later):
    task = deliver_reply if later is None else deliver_reply.using(run_after=timezone.now() + later, priority=10)
    library = LibraryBackend(alias="default", params={"QUEUES": ["default"]})
    theirs = library.enqueue(task, [42], {})

    with CaptureQueriesContext(connection) as queries:
        ours = task_backends["default"].enqueue(task, [42], {})

    assert len(queries) == 1
    assert stored(ours) == stored(theirs)
    assert task_backends["default"].get_result(ours.id).args == [42]
    assert DBTaskResult.objects.ready().filter(pk=ours.id).exists() == (task.run_after is None)


def test_enqueueing_announces_the_task_once_and_returns_its_result(db):
    heard = []

    def receiver(sender, task_result, **kwargs):
        heard.append(task_result.id)

    task_enqueued.connect(receiver)
    try:
        result = deliver_reply.enqueue(7)
    finally:
        task_enqueued.disconnect(receiver)

    assert heard == [result.id]
    assert (result.status, result.args, result.task.module_path) == ("READY", [7], deliver_reply.module_path)


def test_a_task_enqueued_in_a_transaction_that_rolls_back_is_not_stored(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        deliver_reply.enqueue(1)
        raise RuntimeError("rolled back")

    assert not DBTaskResult.objects.exists()


def claim(worker_id, **queues):
    return claim_next_task(worker_id, backend_name="default", **({"queue_names": ["default"]} | queues))


def test_the_claim_takes_tasks_in_the_order_the_library_gives_its_model():
    # claim_next_task's ORDER BY copies it: an upgrade that changed it would fail here, not drift silently.
    ordering = [(term.expression.name, term.descending) for term in DBTaskResult._meta.ordering]
    assert ordering == [("priority", True), ("run_after", False), ("enqueued_at", False)]


def test_ready_tasks_are_claimed_by_priority_then_due_time_and_later_ones_wait(db):
    now = timezone.now()
    later = deliver_reply.using(run_after=now + timedelta(minutes=5)).enqueue(1)
    plain = deliver_reply.enqueue(2)
    urgent = deliver_reply.using(priority=10).enqueue(3)
    overdue = deliver_reply.using(run_after=now - timedelta(minutes=1)).enqueue(4)

    claimed = [claim("w1") for _ in range(3)]

    assert [task.args_kwargs["args"] for task in claimed] == [[3], [4], [2]]
    assert claim("w1", queue_names=None, excluded_queue_names=["default"]) is None  # an excluded queue
    assert claim("w1") is None  # the later one is not due yet
    running = DBTaskResult.objects.get(pk=urgent.db_result.pk)
    assert (running.status, running.worker_ids, running.started_at is not None) == ("RUNNING", ["w1"], True)
    assert DBTaskResult.objects.get(pk=later.db_result.pk).status == "READY"
    assert not DBTaskResult.objects.filter(pk=plain.db_result.pk, status="READY").exists()
    assert overdue.db_result.pk == claimed[1].pk


@pytest.mark.needs_postgres
def test_eight_workers_claiming_at_once_take_every_task_once(transactional_db):
    """Forty ready tasks, eight threads each claiming until none is left, released together: every task is
    claimed, none twice (without SKIP LOCKED's lock two claims of one row would both succeed)."""
    tasks = {str(deliver_reply.enqueue(number).db_result.pk) for number in range(40)}
    claimed, lock = [], threading.Lock()

    def drain(worker):
        while (task := claim(f"w{worker}")) is not None:
            with lock:
                claimed.append((str(task.pk), f"w{worker}"))

    run_at_once(8, drain)

    assert sorted(pk for pk, _ in claimed) == sorted(tasks)
    stored = {str(pk): workers for pk, workers in DBTaskResult.objects.values_list("pk", "worker_ids")}
    assert all(stored[pk] == [worker] for pk, worker in claimed)
