"""Every kind of job, in one place: what it does and its ordering key (hub.db.jobs).

Handlers declare the kind they handle next to their code (`@handles(kinds.X)` in
hub.jobs.job); the app registers each handler object once.
"""

from __future__ import annotations

# -- towards Matrix -------------------------------------------------------------------------
MATRIX_DELIVER = "matrix.deliver"  # a customer's message into their room as their ghost; conv
MATRIX_SEND = "matrix.send"  # an event of the bot (notice, reaction, state) into a room; room-out
# A notice into a conversation's room, after what was queued before it (its room may not
# exist yet when it is queued); conv
MATRIX_NOTICE = "matrix.notice"
MATRIX_RECEIPT_OUT = "matrix.receipt_out"  # the customer read an adviser's message; receipt

# -- from Matrix (stored from the homeserver's transactions before they are acknowledged) --
MATRIX_EVENT = "matrix.event"  # an adviser's message or command; room
MATRIX_RECEIPT_IN = "matrix.receipt_in"  # an adviser read the customer's messages; room
# An adviser joined an encrypted portal: send their devices the room keys of its history; room
CRYPTO_SHARE_HISTORY = "crypto.share_history"

# -- the advisers' day (hub/advisers) ------------------------------------------------------
# Bring the lobby's listing of waiting conversations up to date (one message, edited); lobby
ADVISERS_LOBBY = "advisers.lobby"
# Show who has a conversation in its room's name; conv
ADVISERS_ROOM_LABEL = "advisers.room_label"
# Make a portal a child of the advisers' space (and invite the advisers to the space); space
ADVISERS_SPACE = "advisers.space"
# Post the customer's context (channel, earlier conversations, carts, orders) into a new
# portal and pin it; conv
ADVISERS_CONTEXT = "advisers.context"
# Send a canned reply (`!t NAME`) with the adviser's display name filled in; conv
ADVISERS_CANNED = "advisers.canned"

# -- towards the customer's channel ---------------------------------------------------------
CHANNEL_SEND = "channel.send"  # a message to the customer; conv
CHANNEL_REACT = "channel.react"  # an adviser's reaction to the customer's message; conv
# An adviser edited (channel.edit) or redacted (channel.delete) a message the customer got,
# after its channel.send; idempotent by the edit's or redaction's event id; conv
CHANNEL_EDIT = "channel.edit"
CHANNEL_DELETE = "channel.delete"
CHANNEL_PROFILE = "channel.profile"  # ask the channel for the customer's name; conv

# -- commerce -------------------------------------------------------------------------------
ORDER_TO_CART = "commerce.order_to_cart"  # a WhatsApp catalogue order becomes the cart; conv
CREATE_CHECKOUT = "commerce.checkout"  # create the payment link, then send it; conv

# -- consent and privacy ----------------------------------------------------------------------
# Delete a consent request's refused or revoked photos everywhere the hub put them (the room's
# events redacted, the homeserver's media deleted, the hub's copy removed), then confirm; conv
CONSENT_DELETE = "consent.delete"
