"""The desk's URLs, under /desk/ (supportsite.urls; the attachments proxy is bots')."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.inbox, name="desk-inbox"),
    path("tickets.json", views.inbox_data, name="desk-inbox-data"),
    path("tickets/<int:ticket_id>/", views.ticket_page, name="desk-ticket"),
    path("tickets/<int:ticket_id>/status/", views.change_status, name="desk-ticket-status"),
    path("tickets/<int:ticket_id>/assignee/", views.change_assignee, name="desk-ticket-assignee"),
    path("messages/<int:message_id>/resend/", views.resend, name="desk-resend"),
]
