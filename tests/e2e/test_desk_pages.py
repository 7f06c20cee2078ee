"""The desk in a real browser: agents' pages live against daphne, the worker and the sandbox customer; and the
admin's ticket list with its actions."""

import asyncio

import pytest
from django.db import connections
from django.urls import reverse
from playwright.async_api import expect

from realtime import events
from realtime.broadcast import send_events, send_to_group
from realtime.groups import ticket_group
from tests.conftest import wait_until
from tickets import services
from tickets.hooks import held_announcements
from tickets.models import Message, Ticket

from .conftest import PHONE
from .pictures import png

pytestmark = [pytest.mark.needs_redis, pytest.mark.needs_chromium, pytest.mark.asyncio(loop_scope="session")]

# The browser's own reports while the server is down: refused WebSocket handshakes and requests.
SERVER_DOWN = (r"WebSocket connection to .* failed", r"Failed to load resource")


async def blocking(function, *args, **kwargs):
    """Run a blocking call (the sandbox's client, the ORM, polling) off the browser's event loop, in a thread
    that closes its database connection when done."""

    def call():
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


async def customer_writes(desk, user_id, text=None, **fields):
    """The customer writes to the bot; returns their ticket once the webhook has stored the message."""
    update = await blocking(desk.bot.send_message, user_id, text, **fields)
    telegram_id = update["message"]["message_id"]

    def stored():
        message = Message.objects.filter(telegram_message_id=telegram_id, direction="in").first()
        return message and Ticket.objects.get(pk=message.ticket_id)

    return await blocking(wait_until, stored, message=f"customer {user_id}'s message to be stored")


def ticket_path(ticket):
    return reverse("desk-ticket", args=[ticket.pk])


async def live(*pages):
    for page in pages:
        await expect(page.locator("#connection")).to_have_text("Live")


async def test_two_agents_see_each_others_typing_a_reply_with_its_tick_and_who_has_seen_it(desk, agents):
    ticket = await customer_writes(desk, 501, "My parcel is lost", first_name="Maria")
    alice = await desk.open(agents.alice, ticket_path(ticket))
    bob = await desk.open(agents.bob, ticket_path(ticket), viewport=PHONE)
    await live(alice, bob)
    # Opening the page marked the conversation read: each sees that the other has seen it.
    await expect(alice.locator(".message__seen")).to_have_text("Seen by Bob Chen")
    await expect(bob.locator(".message__seen")).to_have_text("Seen by Alice Martin")

    composer = alice.locator("#composer-text")
    await composer.press_sequentially("We found")
    await expect(bob.locator("#typing")).to_have_text("Alice Martin is typing…")
    await composer.fill("")
    await expect(bob.locator("#typing")).to_have_text("")

    await composer.press_sequentially("We found your parcel.")
    await expect(bob.locator("#typing")).to_have_text("Alice Martin is typing…")
    await composer.press("Shift+Enter")
    await composer.press_sequentially("It ships today.")
    await composer.press("Enter")

    await expect(bob.locator("#typing")).to_have_text("")
    for page in (alice, bob):
        reply = page.locator(".message--out", has_text="We found your parcel.")
        await expect(reply.locator(".message__text")).to_have_text("We found your parcel.\nIt ships today.")
        await expect(reply.locator(".tick")).to_have_text("✓ Sent")
    await expect(alice.locator(".message--pending")).to_have_count(0)
    await expect(alice.locator(".message--out", has_text="We found your parcel.")).to_have_count(1)
    # Bob's page showed the reply while visible, so he has read it too.
    await expect(alice.locator(".message--out", has_text="We found your parcel.")).to_contain_text("Seen by Bob Chen")
    chat = await blocking(desk.bot.chat, 501)
    assert [message.get("text") for message in chat].count("We found your parcel.\nIt ships today.") == 1


async def test_a_colleagues_typing_vanishes_by_itself_once_its_author_falls_silent(desk, agents):
    """G7: a page that stops refreshing its typing without saying stop (a closed laptop, a dropped network)
    stops showing as typing on its colleagues' pages, with no server-side timer."""
    ticket = await customer_writes(desk, 510, "Anyone there?", first_name="Lea")
    bob = await desk.open(agents.bob, ticket_path(ticket))
    await live(bob)

    # Alice's page says she is typing, as it would, and then nothing more: no refresh and no stop.
    await send_to_group(ticket_group(ticket.pk), [events.typing_event(agents.alice, "start", expires_in=5)])

    await expect(bob.locator("#typing")).to_have_text("Alice Martin is typing…")
    await expect(bob.locator("#typing")).to_have_text("", timeout=15_000)


async def test_a_customer_message_appears_live_in_the_inbox_and_on_the_ticket_page(desk, agents):
    ticket = await customer_writes(desk, 502, "Hello?", first_name="Tom")
    inbox = await desk.open(agents.alice, reverse("desk-inbox"))
    page = await desk.open(agents.bob, ticket_path(ticket))
    await live(inbox, page)
    row = inbox.locator(f'[data-ticket-id="{ticket.pk}"]')
    # The customer's message (the bot's automatic reply does not count): Alice has not read it.
    await expect(row.locator(".badge")).to_have_text("1")

    await blocking(desk.bot.send_message, 502, "Is anyone there?")

    await expect(row.locator(".badge")).to_have_text("2")
    await expect(row.locator(".ticket-row__preview")).to_have_text("Is anyone there?")
    await expect(page.locator(".message--in", has_text="Is anyone there?")).to_have_count(1)

    # A new customer: their ticket appears at the top of the inbox.
    await blocking(desk.bot.send_message, 503, "I was charged twice", first_name="Liam")
    await expect(inbox.locator(".ticket-row").first.locator(".ticket-row__customer")).to_have_text("Liam")
    await expect(inbox.locator(".ticket-row")).to_have_count(2)


async def test_the_inbox_applies_events_that_reach_it_out_of_order(desk, agents):
    ticket = await customer_writes(desk, 507, "Where is my refund?", first_name="Ana")
    inbox = await desk.open(agents.alice, reverse("desk-inbox"))
    await live(inbox)
    row = inbox.locator(f'[data-ticket-id="{ticket.pk}"]')
    await expect(row.locator(".badge")).to_have_text("1")

    def customer_writes_then_bob_takes_it():
        with held_announcements() as announced:
            profile = services.TelegramProfile(user_id=507, first_name="Ana")
            services.record_inbound_message(profile, text="Any news?", telegram_message_id=99)
            services.assign_ticket(Ticket.objects.get(pk=ticket.pk), agents.bob, acting_user=agents.bob)
        return announced

    message, assignment = await blocking(customer_writes_then_bob_takes_it)
    # As two server processes may deliver them: the later event first.
    await send_events([assignment])
    await send_events([message])

    await expect(row).to_contain_text("Bob Chen")
    await expect(row.locator(".ticket-row__preview")).to_have_text("Any news?")
    await expect(row.locator(".badge")).to_have_text("2")


async def test_after_a_server_restart_the_pages_come_back_with_what_happened_meanwhile_once(desk, agents):
    ticket = await customer_writes(desk, 504, "First", first_name="Ana")
    page = await desk.open(agents.alice, ticket_path(ticket), expected_console=SERVER_DOWN)
    inbox = await desk.open(agents.alice, reverse("desk-inbox"), label="alice-inbox", expected_console=SERVER_DOWN)
    await live(page, inbox)

    await blocking(desk.server.stop)
    for each in (page, inbox):
        await expect(each.locator("#connection")).to_have_text("Reconnecting…")

    # Meanwhile the customer writes twice (the sandbox, like Telegram, retries the webhook), and a colleague
    # replies from elsewhere: the worker sends it and announces the tick, which no page can hear now.
    await blocking(desk.bot.send_message, 504, "Second, while you were away")
    await blocking(desk.bot.send_message, 504, "Third, still away")
    reply, _ = await blocking(services.queue_reply, ticket, "Bob here: on it", author=agents.bob)
    await blocking(
        wait_until, lambda: Message.objects.get(pk=reply.pk).delivery_status == "sent", message="the reply to be sent"
    )

    await blocking(desk.server.restart)

    await live(page, inbox)
    for text in ("Second, while you were away", "Third, still away", "Bob here: on it"):
        await expect(page.locator(".message", has_text=text)).to_have_count(1)
    await expect(page.locator(".message", has_text="Bob here: on it").locator(".tick")).to_have_text("✓ Sent")
    stored = await blocking(lambda: Message.objects.filter(ticket=ticket).count())
    await expect(page.locator(".message")).to_have_count(stored)
    # Alice's open ticket page read it all, and her inbox knows it from the server's cursors.
    await expect(inbox.locator(f'[data-ticket-id="{ticket.pk}"] .badge')).to_have_count(0)


async def test_the_ticket_page_shows_a_customers_photo(desk, agents):
    file_id = await blocking(desk.bot.upload_file, "photo", png(), "photo.png", "image/png")
    ticket = await customer_writes(desk, 505, caption="The box arrived like this", photo=file_id, first_name="Zoe")

    page = await desk.open(agents.alice, ticket_path(ticket), viewport=PHONE)

    image = page.locator(".attachment img")
    await expect(image).to_be_visible()
    await expect(page.locator(".message--in", has_text="The box arrived like this")).to_have_count(1)
    await page.wait_for_function("() => document.querySelector('.attachment img').naturalWidth === 160")
    photo = await blocking(lambda: ticket.messages.get(direction="in"))
    assert await image.get_attribute("src") == reverse("desk-attachment", args=[photo.pk])


async def test_status_and_assignee_changes_reach_every_page(desk, agents):
    ticket = await customer_writes(desk, 506, "Please close my account", first_name="Kim")
    alice = await desk.open(agents.alice, ticket_path(ticket))
    bob = await desk.open(agents.bob, ticket_path(ticket))
    inbox = await desk.open(agents.bob, reverse("desk-inbox"), label="bob-inbox")
    await live(alice, bob, inbox)
    row = inbox.locator(f'[data-ticket-id="{ticket.pk}"]')

    await alice.click("#assign-me")
    await expect(bob.locator("#assignee-select")).to_have_value(str(agents.alice.pk))
    await expect(row).to_contain_text("Alice Martin")

    await alice.select_option("#status-select", "pending")
    await expect(bob.locator("#ticket-status")).to_have_text("Pending")
    await expect(row.locator(".status")).to_have_text("Pending")

    await bob.select_option("#status-select", "closed")
    await expect(alice.locator("#ticket-status")).to_have_text("Closed")
    await expect(alice.locator("#composer-text")).to_be_disabled()
    # The inbox shows open and pending tickets: the closed one leaves it.
    await expect(row).to_have_count(0)


async def test_a_failed_reply_says_why_and_can_be_re_sent(desk, agents):
    ticket = await customer_writes(desk, 507, "Where is my refund?", first_name="Noor")
    # The bot's automatic reply is through; from now on the customer has blocked the bot.
    await blocking(wait_until, lambda: len(desk.bot.chat(507)) == 2, message="the automatic reply")
    await blocking(desk.bot.add_fault, "sendMessage", error_code=403, chat_id=507, times=None)
    page = await desk.open(agents.alice, ticket_path(ticket))
    await live(page)

    await page.locator("#composer-text").fill("Your refund is on its way")
    await page.locator("#composer-text").press("Enter")

    reply = page.locator(".message--out", has_text="Your refund is on its way")
    await expect(reply.locator(".tick")).to_contain_text("Not delivered: The customer has blocked the bot")
    await blocking(desk.bot.clear_faults)
    await reply.get_by_role("button", name="Re-send").click()
    await expect(reply.locator(".tick")).to_have_text("✓ Sent")
    chat = await blocking(desk.bot.chat, 507)
    assert [message.get("text") for message in chat].count("Your refund is on its way") == 1


async def test_the_admin_ticket_list_selects_its_rows_and_runs_an_action_on_them(desk, agents):
    for user_id, name in ((521, "Ivy"), (522, "Noah")):
        await customer_writes(desk, user_id, "Hello", first_name=name)
    page = await desk.open(agents.alice, reverse("admin:tickets_ticket_changelist"))

    # Django's actions script works the rows' checkboxes (tickets.admin.PlainActionCheckbox writes them).
    await page.locator("#action-toggle").check()
    await expect(page.locator("input.action-select:checked")).to_have_count(2)
    await expect(page.locator(".action-counter")).to_contain_text("2 of 2 selected")
    await page.select_option("select[name=action]", "assign_to_me")
    await page.get_by_role("button", name="Go").click()

    await expect(page.locator(".messagelist")).to_contain_text("Assigned to you")
    assert await blocking(Ticket.objects.filter(assignee=agents.alice).count) == 2
