from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

from bots.webhook import telegram_webhook
from ops.views import readyz


def healthz(request):
    """Liveness: the process is up and serving requests."""
    return HttpResponse("ok\n", content_type="text/plain")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("telegram/webhook/", telegram_webhook, name="telegram-webhook"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
