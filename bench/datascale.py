"""Workload 5 (data scale): generated tickets and messages (generate_series, not the ORM per row), then the
time per page and the query plans of the admin changelist and the inbox views.

Run by the bench as ``python -m bench.datascale '{"tickets": N, "messages_per_ticket": M}'`` with the
bench's environment (bench.settings, its own database); prints one JSON result.
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from tickets import queries  # noqa: E402
from tickets.models import Ticket  # noqa: E402

AGENTS = 10
SEARCH_WORD = "refund"

GENERATE = [
    """INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active,
                              date_joined)
       SELECT '!', false, 'bench-agent-' || i, 'Agent', i::text, '', true, true, now()
       FROM generate_series(1, %(agents)s) i""",
    """INSERT INTO tickets_customer (telegram_user_id, first_name, last_name, username, language_code, created_at,
                                    last_reply_seq)
       SELECT 8000000000 + i, 'Customer', i::text, 'customer' || i, 'en', now() - make_interval(mins => i::int),
              %(per_ticket)s / 2
       FROM generate_series(1, %(tickets)s) i""",
    # One ticket per customer: 20% open, 10% pending, 40% resolved, 30% closed; a third unassigned.
    """INSERT INTO tickets_ticket (customer_id, status, assignee_id, subject, created_at, updated_at, last_message_at,
                                  last_seq)
       SELECT c.id,
              (ARRAY['open','open','pending','resolved','resolved','resolved','resolved','closed','closed','closed'])
                  [1 + c.id %% 10],
              CASE WHEN c.id %% 3 = 0 THEN NULL
                   ELSE (SELECT min(id) FROM auth_user WHERE username LIKE 'bench-agent-%%') + c.id %% %(agents)s END,
              'Question ' || c.id, c.created_at, now() - make_interval(mins => c.id::int),
              now() - make_interval(mins => c.id::int), 0
       FROM tickets_customer c""",
    # Messages alternate in/out; ids interleave tickets (round k of every ticket, then round k + 1), as on a
    # busy desk where many conversations run at once.
    """INSERT INTO tickets_message (ticket_id, direction, author_id, text, is_command, attachment, telegram_message_id,
                                   reply_to_telegram_message_id, delivery_status, delivery_attempts, delivery_error,
                                   delivery_due_at, outbox_seq, client_msg_id, created_at, edited_at)
       SELECT t.id, CASE WHEN k %% 2 = 1 THEN 'in' ELSE 'out' END, CASE WHEN k %% 2 = 0 THEN t.assignee_id END,
              CASE WHEN random() < 0.01 THEN 'I want a refund for order ' ELSE 'Where is my order ' END
                  || (random() * 1000000)::int || ', thanks',
              false, NULL, k, NULL, CASE WHEN k %% 2 = 1 THEN '' ELSE 'sent' END,
              CASE WHEN k %% 2 = 1 THEN 0 ELSE 1 END, '', NULL, CASE WHEN k %% 2 = 0 THEN k / 2 END, NULL,
              t.last_message_at - make_interval(mins => (%(per_ticket)s - k)::int), NULL
       FROM generate_series(1, %(per_ticket)s) k CROSS JOIN tickets_ticket t
       ORDER BY k, t.id""",
    # Each ticket's latest notable message (not a command, not an automatic reply), as the services keep it.
    """UPDATE tickets_ticket t SET last_notable_message_id = m.id, last_notable_author_id = m.author_id
       FROM (SELECT DISTINCT ON (ticket_id) ticket_id, id, author_id FROM tickets_message
             WHERE NOT is_command AND (direction = 'in' OR author_id IS NOT NULL)
             ORDER BY ticket_id, id DESC) m
       WHERE m.ticket_id = t.id""",
    """UPDATE tickets_ticket SET assignee_id = %(reader)s
       WHERE assignee_id = (SELECT id FROM auth_user WHERE username = 'bench-agent-1')""",
    # The measuring agent has read half of the tickets up to their last inbound message.
    """INSERT INTO tickets_readcursor (ticket_id, user_id, last_read_message_id, updated_at)
       SELECT DISTINCT ON (m.ticket_id) m.ticket_id, %(reader)s, m.id, now()
       FROM tickets_message m WHERE m.ticket_id %% 2 = 0 AND m.direction = 'in'
       ORDER BY m.ticket_id, m.id DESC""",
    "ANALYZE",
]


def generate(tickets, per_ticket, reader):
    with connection.cursor() as cursor:
        for statement in GENERATE:
            cursor.execute(
                statement, {"agents": AGENTS, "tickets": tickets, "per_ticket": per_ticket, "reader": reader}
            )


def timed(function, repeat=3):
    """Median milliseconds of ``repeat`` calls after a warm one (one call if the warm one took over a second:
    a page that slow is reported as slow either way, and the full run stays within its time)."""
    started = time.perf_counter()
    function()  # warm: plans and caches, as on a page an agent reloads
    if time.perf_counter() - started > 1:
        repeat = 1
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def explain(sql, params=None):
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def measured(load):
    """``load``'s time, its query count, and the plan of its slowest query."""
    milliseconds = timed(load)
    with CaptureQueriesContext(connection) as captured:
        load()
    slowest = max(captured.captured_queries, key=lambda query: float(query["time"]))
    return {
        "ms": milliseconds,
        "queries": len(captured.captured_queries),
        "slowest_query_ms": round(float(slowest["time"]) * 1000, 1),
        "plan": explain(slowest["sql"]),
    }


def admin_page(client, query_string):
    url = f"/admin/tickets/ticket/{query_string}"

    def load():
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)

    return measured(load)


def inbox(reader, view):
    """The desk inbox's first page (tickets.queries.inbox_page: active tickets, unread counts, previews)."""
    return measured(lambda: queries.inbox_page(reader, view=view))


def measure_pages(reader):
    """Each page's time, query count and plan, as ``reader`` (a staff user) sees it."""
    client = Client()
    client.force_login(reader)
    return {
        "admin changelist": admin_page(client, ""),
        "admin changelist, unread filter": admin_page(client, "?unread=yes"),
        f"admin changelist, search '{SEARCH_WORD}'": admin_page(client, f"?q={SEARCH_WORD}"),
        "inbox: mine": inbox(reader, "mine"),
        "inbox: unassigned": inbox(reader, "unassigned"),
        "inbox: all": inbox(reader, "all"),
    }


def main():
    spec = json.loads(sys.argv[1])
    settings.ALLOWED_HOSTS.append("testserver")
    reader = get_user_model().objects.create_user("bench-reader", is_staff=True, is_superuser=True)
    started = time.perf_counter()
    generate(spec["tickets"], spec["messages_per_ticket"], reader.pk)
    generated_s = round(time.perf_counter() - started, 1)
    result = {
        "tickets": Ticket.objects.count(),
        "messages": spec["tickets"] * spec["messages_per_ticket"],
        "generated_s": generated_s,
        "pages": measure_pages(reader),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
