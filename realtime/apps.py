from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"

    def ready(self):
        from tickets.signals import announced

        from .broadcast import broadcast

        announced.connect(broadcast, dispatch_uid="realtime.broadcast")
