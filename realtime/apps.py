from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"

    def ready(self):
        from tickets.hooks import announced

        from .broadcast import broadcast

        announced.connect(broadcast, dispatch_uid="realtime.broadcast")
