from django.apps import AppConfig


class BotsConfig(AppConfig):
    name = "bots"
    verbose_name = "Telegram"

    def ready(self):
        from tickets.hooks import agent_typing, customer_forgotten, reply_queued

        from .dead_letters import forget_sender
        from .delivery import show_agent_typing
        from .outbox import enqueue_queued_reply

        reply_queued.connect(enqueue_queued_reply, dispatch_uid="bots.enqueue_queued_reply")
        agent_typing.connect(show_agent_typing, dispatch_uid="bots.show_agent_typing")
        customer_forgotten.connect(forget_sender, dispatch_uid="bots.forget_sender")
