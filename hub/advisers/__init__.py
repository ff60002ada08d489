"""The advisers' day: who has which conversation (routing, claim/assign, close), the lobby
and the space, private notes, canned replies, the customer's context."""
