"""django-tasks-db's database queue, its rows written with plain SQL: enqueueing a task, and a worker claiming
the next one.

Every reply enqueues its delivery task in the transaction that queues it (bots.outbox): 8.8% of the
webhook's samples for a /status update (bench/profiles/webhook-status-before.txt). The library builds the
task's TaskResult twice (each time importing the task and copying it) and stores the row through the ORM;
here the row is built as the library builds it, its ``pre_save`` receivers run, it is stored the way the
webhook stores its own rows (tickets.services.rows), and its TaskResult is built once: 0.38 ms of CPU per
enqueue against the library's 0.45 ms, measured in-process.

A worker claims the next ready task with one UPDATE of the row its subquery locks (``FOR UPDATE SKIP
LOCKED``: rows other workers hold are skipped, so no two take one task), where the library's worker makes
four round trips: BEGIN, that SELECT, an UPDATE through the ORM, COMMIT.
"""

from django.db import connection
from django.db.models.signals import pre_save
from django.utils import timezone
from django_tasks_db.backend import DatabaseBackend as LibraryBackend
from django_tasks_db.compat import TaskResultStatus, normalize_json, task_enqueued
from django_tasks_db.models import DBTaskResult, get_date_max

from tickets.services import rows


class DatabaseBackend(LibraryBackend):
    def enqueue(self, task, args, kwargs):
        # As the library's, but its TaskResult (which imports the task again and copies it) is built once.
        self.validate_task(task)
        result = self._task_to_db_task(task, args, kwargs).task_result
        task_enqueued.send(type(self), task_result=result)
        return result

    def _task_to_db_task(self, task, args, kwargs):
        result = DBTaskResult(
            id=self._get_id(),
            args_kwargs=normalize_json({"args": args, "kwargs": kwargs}),
            priority=task.priority,
            task_path=task.module_path,
            queue_name=task.queue_name,
            run_after=task.run_after,
            backend_name=self.alias,
        )
        # The library's own receiver gives a task to run now its run_after (the end of time, by its convention).
        pre_save.send(sender=DBTaskResult, instance=result, raw=False, using=connection.alias, update_fields=None)
        rows.insert(result)
        return result


def claim_next_task(worker_id, *, backend_name, queue_names=None, excluded_queue_names=()):
    """The next ready task of ``backend_name`` (in ``queue_names``, or any queue, but the excluded ones), in
    the library's order, claimed for ``worker_id`` (RUNNING since now, as the library's ``claim`` marks it);
    None if no task is ready."""
    now = timezone.now()
    claimed, claimed_params = rows.assignments(
        DBTaskResult,
        # A ready task has run nowhere yet, so its worker_ids, which the library appends to, start here.
        {"status": TaskResultStatus.RUNNING.value, "started_at": now, "worker_ids": [worker_id]},
    )
    conditions = ["status = %s", "(run_after = %s OR run_after <= %s)", "backend_name = %s"]
    params = [TaskResultStatus.READY.value, rows.moment(get_date_max()), rows.moment(now), backend_name]
    for names, operator in ((queue_names, "IN"), (excluded_queue_names or None, "NOT IN")):
        if names is not None:
            conditions.append(f"queue_name {operator} ({', '.join(['%s'] * len(names))})")
            params += names
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    table = connection.ops.quote_name(DBTaskResult._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            # Still ready as it is updated: the subquery's lock alone keeps others off it; this says so too.
            f"UPDATE {table} SET {', '.join(claimed)} WHERE status = %s AND id = (SELECT id FROM {table} "
            f"WHERE {' AND '.join(conditions)} ORDER BY priority DESC, run_after, enqueued_at LIMIT 1{lock}) "
            f"RETURNING {rows.columns(DBTaskResult)}",
            [*claimed_params, TaskResultStatus.READY.value, *params],
        )
        row = cursor.fetchone()
    return None if row is None else rows.load(DBTaskResult, row)
