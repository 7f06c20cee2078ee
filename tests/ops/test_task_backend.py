"""The task queue's backend stores each task's row with one plain INSERT, the same row django-tasks-db's own
backend stores, so the library's worker, results and queries read it as theirs."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks import task_backends
from django_tasks_db.backend import DatabaseBackend as LibraryBackend
from django_tasks_db.models import DBTaskResult

from bots.tasks import deliver_reply

# Every column but the two each enqueue makes anew.
COMPARED = [field.attname for field in DBTaskResult._meta.concrete_fields if field.name not in ("id", "enqueued_at")]


def stored(result):
    return DBTaskResult.objects.filter(pk=result.id).values(*COMPARED).get()


@pytest.mark.parametrize(
    "task",
    [deliver_reply, deliver_reply.using(run_after=timezone.now() + timedelta(minutes=5), priority=10)],
    ids=["to run now", "to run later, with a priority"],
)
def test_a_task_is_stored_as_the_librarys_backend_stores_it_in_one_statement(db, task):
    library = LibraryBackend(alias="default", params={"QUEUES": ["default"]})
    theirs = library.enqueue(task, [42], {})

    with CaptureQueriesContext(connection) as queries:
        ours = task_backends["default"].enqueue(task, [42], {})

    assert len(queries) == 1
    assert stored(ours) == stored(theirs)
    assert task_backends["default"].get_result(ours.id).args == [42]
    assert DBTaskResult.objects.ready().filter(pk=ours.id).exists() == (task.run_after is None)


def test_a_task_enqueued_in_a_transaction_that_rolls_back_is_not_stored(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        deliver_reply.enqueue(1)
        raise RuntimeError("rolled back")

    assert not DBTaskResult.objects.exists()
