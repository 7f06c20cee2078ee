"""Property test: whatever valid update Telegram sends, the webhook never answers 5xx."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickets.models import Message

from . import factories

texts = st.text(min_size=1, max_size=4096).filter(lambda text: text.strip())
commands = st.sampled_from(["/start", "/new", "/status", "/unknown", "/start@sandbox_bot extra"])
media = st.sampled_from(sorted(factories.MEDIA)).map(lambda kind: factories.MEDIA[kind])
users = st.integers(min_value=1, max_value=2**40)


@st.composite
def updates(draw):
    user_id = draw(users)
    fields = {}
    kind = draw(st.sampled_from(["text", "command", "media", "edit", "reply", "group", "other"]))
    if kind == "media":
        fields = dict(draw(media))
        if draw(st.booleans()):
            fields["caption"] = draw(texts)[:1024]
        return factories.update(user_id, **fields)
    if kind == "command":
        return factories.update(user_id, draw(commands))
    if kind == "edit":
        sent = factories.message(user_id, draw(texts))
        return {"update_id": factories.next_id(), "edited_message": {**sent, "edit_date": 1}}
    if kind == "reply":
        original = factories.message(user_id, draw(texts))
        return factories.update(user_id, draw(texts), reply_to_message=original)
    if kind == "group":
        return factories.update(user_id, draw(texts), chat_type=draw(st.sampled_from(["group", "supergroup"])))
    if kind == "other":
        return {"update_id": factories.next_id(), draw(st.sampled_from(["poll", "my_chat_member", "x"])): {}}
    first_name = draw(st.text(min_size=1, max_size=64))
    update = factories.update(user_id, draw(texts))
    update["message"]["from"]["first_name"] = first_name
    return update


def test_varied_valid_updates_never_get_a_5xx(start_server):
    server = start_server()
    answers = []

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(updates())
    def post(update):
        response = server.post_update(update)
        answers.append(response.status_code)
        assert response.status_code < 500, (response.status_code, response.text, server.log()[-3000:])

    post()
    assert len(answers) >= 100
    assert Message.objects.filter(direction=Message.Direction.IN).exists()
