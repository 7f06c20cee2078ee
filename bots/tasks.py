"""Background tasks of the bot (django-tasks, database backend, run by ``manage.py db_worker``)."""

from django_tasks import task


@task()
def deliver_reply(message_id):
    """Send one outbound reply to Telegram; see bots.delivery.deliver."""
    # Imported on call: bots.delivery imports bots.outbox, which enqueues this task.
    from .delivery import deliver

    deliver(message_id)


@task()
def replay_dead_letter(dead_letter_id):
    """Replay one dead-lettered update through the handlers (see bots.dead_letters)."""
    from .application import BotLoop
    from .dead_letters import replay_pending

    BotLoop.run_with_application(lambda application: replay_pending(application, ids=[dead_letter_id]), timeout=60)
