from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from bots.attachments import attachment
from bots.webhook import telegram_webhook
from tickets import views as desk

urlpatterns = [
    path("admin/", admin.site.urls),
    # Logging in and out, and nothing else: no password reset (there is no email backend to send one).
    path("accounts/login/", desk.login, name="login"),
    path("accounts/logout/", desk.logout, name="logout"),
    path("desk/", include("tickets.urls")),
    # The desk's attachments come from Telegram, which is bots' to talk to.
    path("desk/attachments/<int:message_id>/", attachment, name="desk-attachment"),
    path("telegram/webhook/", telegram_webhook, name="telegram-webhook"),
    # GET /healthz and /readyz are answered in front of Django (supportsite.machine_requests).
    # Browsers ask for it whatever the page says.
    path("favicon.ico", RedirectView.as_view(url=static("desk/favicon.svg"))),
]
