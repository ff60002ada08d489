"""Telegram Bot API channel: webhook in, Bot API out (see channel.py)."""
