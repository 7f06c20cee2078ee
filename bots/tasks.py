"""Background tasks of the bot (django-tasks, database backend, run by ``manage.py db_worker``)."""

from django_tasks import task


@task()
def deliver_reply(message_id):
    """Send one outbound reply to Telegram; see bots.delivery.deliver."""
    # Imported on call: bots.delivery imports bots.outbox, which enqueues this task.
    from .delivery import deliver

    deliver(message_id)
