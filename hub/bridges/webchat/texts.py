"""The chat widget's words in the shop's language: sent with the session (`texts`), so
web/static/widget.js has no catalogue of its own. Its English strings stay as fallbacks there
(a widget served by an older hub still reads well); the keys are the widget's.

`{n}`, `{name}`, `{size}`, `{percent}`, `{error}`, `{status}` and `{emoji}` are filled in by
the widget.
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.i18n import N_, _

WIDGET_TEXTS: Mapping[str, str] = {
    # the launcher, the header, the connection notice
    "open_chat": N_("Open chat"),
    "close_chat": N_("Close chat"),
    "unread": N_("{n} unread"),
    "chat": N_("Chat"),
    "subtitle": N_("We reply as soon as we can"),
    "reconnecting": N_("Reconnecting…"),
    "unreachable": N_("Can’t reach the chat right now — retrying…"),
    # the message list and the composer
    "messages": N_("Messages"),
    "adviser": N_("Adviser"),
    "today": N_("Today"),
    "yesterday": N_("Yesterday"),
    "attach": N_("Attach a file"),
    "placeholder": N_("Write a message…"),
    "message": N_("Message"),
    "send_message": N_("Send message"),
    "send": N_("Send"),
    "drop": N_("Drop files to send"),
    # the reply buttons under a message of the shop (a group of buttons, for screen readers)
    "reply_options": N_("Reply options"),
    # files in the conversation
    "open_image": N_("Open image {name} in a new tab"),
    "image": N_("Image"),
    "download": N_("Download {name}"),
    "file": N_("File"),
    "upload_progress": N_("Upload progress"),
    "uploading": N_("Uploading… {percent}%"),
    # a message's state
    "sending": N_("Sending…"),
    "sent": N_("Sent"),
    "delivered": N_("Delivered"),
    "read": N_("Read"),
    "not_delivered": N_("Not delivered"),
    "retrying": N_("Not sent — retrying…"),
    "retry_now": N_("Retry now"),
    # an adviser changed or deleted a message in Matrix; reacted to the customer's message
    "edited": N_("edited"),
    "deleted": N_("Message deleted"),
    "reaction": N_("Reaction of the shop: {emoji}"),
    # over the hub's rate limits (429): the message is kept and sent again by itself
    "rate_limited": N_("Too many messages — sending again in a moment…"),
    "not_sent": N_("Not sent."),
    "edit": N_("Edit"),
    "edit_label": N_("Edit and resend"),
    "retry": N_("Retry"),
    "remove": N_("Remove"),
    "remove_label": N_("Remove unsent message"),
    # what went wrong
    "send_failed": N_("Message could not be sent."),
    "message_not_sent": N_("Message not sent: {error}"),
    "too_large_max": N_("File is too large (max {size})."),
    "too_large": N_("File is too large."),
    "upload_failed": N_("Upload failed."),
    "upload_failed_because": N_("Upload failed: {error}"),
    "request_failed": N_("Request failed ({status})"),
    "network": N_("network"),
}


def widget_texts() -> dict[str, str]:
    """Every widget text in the shop's language (key → text)."""
    return {key: _(text) for key, text in WIDGET_TEXTS.items()}
