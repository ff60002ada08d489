"""Config of the advisers' day: who gets which conversation (`routing`), private notes
(`notes`), canned replies (`canned_replies`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from hub.config.section import Section


class RoutingConfig(Section):
    # Assign each new or reopened conversation to an available adviser (round robin: the one
    # assigned least recently, below the cap). Off: conversations wait in the lobby for !claim.
    auto_assign: bool = True
    # Open conversations an adviser holds at most before automatic assignment passes them by.
    max_open_per_adviser: int = Field(15, ge=1, le=10_000)
    # The assignee has not answered the customer this many minutes after the assignment: the
    # conversation goes back to the lobby (and to the next adviser). 0: never.
    requeue_after_minutes: int = Field(15, ge=0, le=24 * 60)
    # Advisers who do not have a conversation may still answer its customer. Off: their
    # messages stay in the room (they can always read it) and the room is told once.
    others_may_answer: bool = True
    # All portal rooms become children of one Matrix space the advisers are invited to, so
    # every client shows them grouped.
    space: bool = True


class NotesConfig(Section):
    # A message starting with this stays in Matrix: a private note for the other advisers.
    prefix: str = Field("//", min_length=1, max_length=8)
    # Messages in a Matrix thread stay in Matrix too.
    threads: bool = True


class CannedReply(Section):
    # `!t NAME` sends it. Letters, digits, - and _.
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,32}$")
    # The text, or one per language ({de: ..., en: ...}: the shop's language, else the first).
    # Variables: {customer_name}, {adviser_name}, {shop_name}.
    text: str | dict[str, str]
    # An optional picture sent with it: an http(s) URL the hub fetches.
    image: str | None = Field(None, pattern=r"^https?://")

    @field_validator("text")
    @classmethod
    def _not_empty(cls, v: str | dict[str, str]) -> str | dict[str, str]:
        texts = [v] if isinstance(v, str) else list(v.values())
        if not texts or not all(t.strip() for t in texts):
            raise ValueError("must not be empty")
        return v
