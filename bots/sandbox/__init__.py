"""The Telegram sandbox: a fake, Bot-API-compatible Telegram server for development and tests (see server.py)."""
