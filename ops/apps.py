from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: health checks (``healthcheck``, ``/readyz``), housekeeping and the task worker's heartbeat."""

    name = "ops"
    verbose_name = "Operations"
