"""Drill: PostgreSQL restarts while customers write.

While the database is down the webhook answers 503, within the pool's short timeout, so Telegram (the
sandbox) delivers the update again later; once it is back, every update is stored exactly once: an update
whose transaction the restart cut off is redelivered and stored, one that committed is redelivered and
recognised. The worker and the outbox sweep ride the outage out and go on delivering replies.
"""

from collections import Counter

import pytest

from tests.bots import factories
from tests.conftest import wait_until

from .conftest import CustomerStream

pytestmark = pytest.mark.drill

CUSTOMERS = [33_001, 33_002, 33_003, 33_004]
LATECOMER = 33_005  # first writes while the database is down
POOL_TIMED_OUT = "couldn't get a connection"  # what a process waiting for the pool logs


def test_postgres_restarted_mid_stream_answers_503_meanwhile_and_stores_every_update_once(drill):
    postgres = drill.services.postgres
    server = drill.start_server()
    # A shorter pool timeout for the worker and the sweep only keeps the outage short: it lasts until both
    # have noticed it.
    worker = drill.start_worker(DATABASE_POOL_TIMEOUT=1)
    sweep = drill.start_worker(("outbox_sweep", "--every", "0.5"), DATABASE_POOL_TIMEOUT=1)
    posted_directly = factories.update(CUSTOMERS[0], "posted by the test")

    with CustomerStream(drill.bot, CUSTOMERS, window=20) as stream:
        stream.wait_for_acknowledged(15, "updates before the restart")
        answer_before = server.post_update(posted_directly)
        postgres.stop()
        tried = len(drill.bot.deliveries())
        answer_while_down = server.post_update(posted_directly)
        drill.bot.send_message(LATECOMER, "is anybody there?")
        # Down until the sandbox has retried for a while and the worker and the sweep have waited in vain.
        wait_until(lambda: len(drill.bot.deliveries()) >= tried + 10, message="ten deliveries meanwhile")
        for process in (worker, sweep):
            wait_until(lambda process=process: POOL_TIMED_OUT in process.log(), message=f"{process.args[2]} to wait")
        postgres.start()
        stream.wait_for_acknowledged(stream.acknowledged() + 15, "updates after the restart")
        sent = stream.finish()
    answer_after = server.post_update(posted_directly)  # as Telegram would had it not seen the first 200

    assert [answer_before.status_code, answer_while_down.status_code, answer_after.status_code] == [200, 503, 200]
    deliveries = drill.bot.deliveries()
    assert {attempt["status"] for attempt in deliveries} == {200, 503}  # no 500, no timeout (no status)
    acknowledged = Counter(attempt["update_id"] for attempt in deliveries if attempt["status"] == 200)
    assert acknowledged == Counter(range(1, len(sent) + 2))
    written = [*sent, (LATECOMER, "is anybody there?"), (CUSTOMERS[0], "posted by the test")]
    assert Counter(drill.services.inbound([*CUSTOMERS, LATECOMER])) == Counter(written)
    bot_id = int(drill.token.split(":")[0])
    claims = drill.services.count("SELECT count(*) FROM bots_telegramupdate WHERE bot_id = %s", (bot_id,))
    assert claims == len(written)
    # The worker and the sweep are still there, and the latecomer's automatic reply is delivered.
    assert (worker.popen.poll(), sweep.popen.poll()) == (None, None)
    wait_until(lambda: drill.bot.chat(LATECOMER)[-1]["from"]["is_bot"], message="the latecomer's automatic reply")
