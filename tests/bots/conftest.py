import pytest

from tests.conftest import unique_bot_token


@pytest.fixture
def bot(sandbox):
    """A sandbox bot with its own token (so call records belong to this test)."""
    return sandbox.client(unique_bot_token())
