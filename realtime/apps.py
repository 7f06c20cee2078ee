from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"

    def ready(self):
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_save

        from tickets.hooks import announced

        from .broadcast import broadcast
        from .sessions import on_logged_out, on_user_deleted, on_user_saved

        announced.connect(broadcast, dispatch_uid="realtime.broadcast")
        user_logged_out.connect(on_logged_out, dispatch_uid="realtime.sessions.logged_out")
        post_save.connect(on_user_saved, sender=get_user_model(), dispatch_uid="realtime.sessions.user_saved")
        post_delete.connect(on_user_deleted, sender=get_user_model(), dispatch_uid="realtime.sessions.user_deleted")
