"""What to do with a Matrix event the homeserver pushed: a command, a reply, or nothing.

Runs as the matrix.event job handler, so events of one room are handled in order and a
crash mid-way re-runs the event (every effect is idempotent by event id).

Only the shop's advisers speak to the customer. A message, file or reaction of anyone else
in a portal room stays in the room: the room is told once per sender and conversation (the
conversation's `meta` remembers whom it told). So does an adviser's when the conversation
has another assignee and `routing.others_may_answer` is off.

Private notes stay in the room without a word: a message starting with `notes.prefix`, or
written in a thread (`notes.threads`). Commands are commands wherever they are written.

An adviser's edit (m.replace) or redaction of a message the customer got, and the removal
(redaction) of a reaction that reached them, are passed on as channel.edit, channel.delete
and channel.react jobs where the channel's capabilities allow; where they do not, the room
is told once per conversation and kind of change. An edit or redaction of anything never
relayed does nothing.

Encrypted events (`m.room.encrypted`) go through the decryptor of end-to-bridge encryption,
when the hub has one, and then the same way as clear ones. One that cannot be read is never
dropped in silence: the room is told once per conversation that its messages cannot reach
the customer, and it is logged and counted (hub_undecryptable_events_total).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from hub.advisers.routing import may_answer
from hub.config.advisers import NotesConfig
from hub.core.bot import CommandContext, CommandHandler, CommandRunner
from hub.core.commands import CommandRegistry, NotACommand, parse
from hub.core.text import storable
from hub.db import conversations, notices, outbound
from hub.db.database import Database, Tx
from hub.db.models import Conversation, Message
from hub.i18n import N_, _
from hub.jobs import kinds
from hub.jobs.job import Finish, Job, RetryLater, handles
from hub.matrix.decryption import Decryptor, RoomKeyMissing, Undecryptable
from hub.metrics import UNDECRYPTABLE_EVENTS

if TYPE_CHECKING:
    from hub.bridges.base import Capabilities

log = logging.getLogger(__name__)

_KINDS = {
    "m.text": "text",
    "m.emote": "text",
    "m.image": "image",
    "m.file": "file",
    "m.video": "video",
    "m.audio": "audio",
}
# conversation.meta[_TOLD]: the senders the room was told do not reach the customer.
_TOLD = "not_advisers_told"
# conversation.meta[_ENCRYPTED_TOLD]: the room was told its encrypted messages are unreadable.
_ENCRYPTED_TOLD = "undecryptable_told"
# conversation.meta[_NOT_ASSIGNEE_TOLD]: advisers told the conversation is another's.
_NOT_ASSIGNEE_TOLD = "not_assignee_told"
# conversation.meta[_CANNOT_TOLD]: the changes ("edit", "delete", "reaction") the room was
# told its channel cannot pass on.
_CANNOT_TOLD = "cannot_told"
ENCRYPTED = "m.room.encrypted"
REDACTION = "m.room.redaction"
_REPLY_FALLBACK = re.compile(r"^(> .*\n)+\n", re.MULTILINE)
_HTML_REPLY_FALLBACK = re.compile(r"^<mx-reply>.*?</mx-reply>", re.DOTALL)


def _object(value: object) -> dict[str, Any]:
    """A JSON object of an event, or an empty one (events come from anyone's client)."""
    return value if isinstance(value, dict) else {}


def strip_reply_fallback(body: str, html: str | None) -> tuple[str, str | None]:
    """Older clients quote the replied-to message in the body; the customer needs no quote."""
    if body.startswith("> "):
        body = _REPLY_FALLBACK.sub("", body, count=1)
    if html:
        html = _HTML_REPLY_FALLBACK.sub("", html, count=1)
    return body, html


def outbound_values(event: dict[str, Any], conversation: Conversation) -> dict[str, Any] | None:
    """The message row for an adviser's event, or None when it is not for the customer."""
    content = event.get("content")
    if not isinstance(content, dict):
        return None
    kind = _KINDS.get(str(content.get("msgtype")))
    body = content.get("body")
    if kind is None or not isinstance(body, str):
        return None  # notices (bots), unknown msgtypes, redacted events
    relates = _object(content.get("m.relates_to"))
    if relates.get("rel_type") == "m.replace":
        return None  # an edit changes a message (Dispatcher._edit), it is not a new one
    html = (
        content.get("formatted_body") if content.get("format") == "org.matrix.custom.html" else None
    )
    body, html = strip_reply_fallback(
        storable(body), storable(html) if isinstance(html, str) else None
    )
    values: dict[str, Any] = {
        "conversation_id": conversation.id,
        "direction": "out",
        "kind": kind,
        "matrix_event_id": event["event_id"],
        "sender_mxid": event["sender"],
        "status": "pending",
    }
    if kind == "text":
        if content.get("msgtype") == "m.emote":
            body = f"* {body}"
        values |= {"text": body, "html": html}
    else:
        # In an encrypted room the file is encrypted too: its key comes in `file`.
        file = _encrypted_file(content.get("file"))
        url = file["url"] if file else content.get("url")
        if not isinstance(url, str) or not url.startswith("mxc://"):
            return None  # no file, or one we could not read
        info = _object(content.get("info"))
        filename = content.get("filename") if isinstance(content.get("filename"), str) else body
        caption = body if content.get("filename") and body != filename else None
        values |= {
            "text": caption,
            "media": {
                "filename": filename,
                "mimetype": str(info.get("mimetype") or "application/octet-stream"),
                "size": int(info.get("size") or 0),
                "mxc": url,
                "media_id": None,
            },
        }
        if file:
            values["media"]["file"] = file
    in_reply = relates.get("m.in_reply_to")
    if isinstance(in_reply, dict) and isinstance(in_reply.get("event_id"), str):
        values["_reply_event"] = in_reply["event_id"]
    return values


def _encrypted_file(value: object) -> dict[str, Any] | None:
    """The `file` of an encrypted attachment (EncryptedFile of the spec), if well formed."""
    file = _object(value)
    key, hashes = _object(file.get("key")), _object(file.get("hashes"))
    if (
        isinstance(file.get("url"), str)
        and isinstance(file.get("iv"), str)
        and isinstance(key.get("k"), str)
        and isinstance(hashes.get("sha256"), str)
    ):
        return {
            "url": file["url"],
            "key": key,
            "iv": file["iv"],
            "hashes": hashes,
            "v": file.get("v", "v2"),
        }
    return None


def _reply_target(content: dict[str, Any]) -> str | None:
    """The event a message replies to (m.in_reply_to), if any."""
    in_reply = _object(_object(content.get("m.relates_to")).get("m.in_reply_to"))
    target = in_reply.get("event_id")
    return target if isinstance(target, str) else None


def is_note(content: dict[str, Any], prefix: str | None, threads: bool) -> bool:
    """Whether an adviser's message is a private note that stays in Matrix: its text starts
    with `prefix` (after a reply's quote), or it is in a thread and `threads` is on."""
    relates = _object(content.get("m.relates_to"))
    if threads and relates.get("rel_type") == "m.thread":
        return True
    body = content.get("body")
    if not prefix or not isinstance(body, str):
        return False
    return strip_reply_fallback(body, None)[0].lstrip().startswith(prefix)


def edit_of(content: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(the edited event, its new text, its new HTML) of an m.replace edit; None for
    anything else, or an edit without usable new content."""
    relates = _object(content.get("m.relates_to"))
    target = relates.get("event_id")
    if relates.get("rel_type") != "m.replace" or not isinstance(target, str):
        return None
    new = _object(content.get("m.new_content"))
    body = new.get("body")
    if _KINDS.get(str(new.get("msgtype"))) is None or not isinstance(body, str):
        return None
    html = new.get("formatted_body") if new.get("format") == "org.matrix.custom.html" else None
    text = storable(body)
    if new.get("msgtype") == "m.emote":
        text, html = f"* {text}", None
    return target, text, storable(html) if isinstance(html, str) else None


def _redacted(event: dict[str, Any]) -> str | None:
    """The event a redaction removes: top-level `redacts` before room version 11, in the
    content from it on."""
    target = event.get("redacts") or _object(event.get("content")).get("redacts")
    return target if isinstance(target, str) else None


class ChannelTraits(Protocol):
    """What the dispatcher reads of a channel (a Channel, or its class): the name the room
    knows it by and what it can pass on."""

    @property
    def label(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...


# What the room is told when the customer's channel cannot pass a change on; {channel} is
# its label (WhatsApp, Telegram, ...).
_CANNOT = {
    "edit": N_("{channel} cannot edit a sent message: the customer still sees the first version."),
    "delete": N_("{channel} cannot delete a sent message: the customer still sees it."),
    "reaction": N_("{channel} cannot show reactions: the customer does not see them."),
}
_CAPABILITY = {"edit": "edits", "delete": "deletes", "reaction": "reactions"}


class _Unreadable(Exception):
    """An encrypted event the hub cannot read: `code` is the metric's label, `detail` the
    decryptor's reason for the log."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def key_retry_delay(attempts: int, wait_seconds: float) -> float | None:
    """How long until the next try of an event whose room key is missing, after `attempts`
    tries; None once `wait_seconds` have been waited.

    Counted in the job's attempts, not by the event's origin_server_ts against the hub's
    clock: that timestamp is the sending homeserver's clock (skewed, or in the future, on a
    federated server), HUB_CLOCK moves the hub's clock on staging hubs and in tests, and an
    event that waited in the queue while the hub was down would be given up at once although
    its key may sit in the same backlog. Delays double from one second (keys usually come
    within a moment), so a wait of 20 s takes 5 retries and the longest allowed (600 s) 10:
    within the job queue's default of 12 attempts, so an event never dies unexplained."""
    waited = 2.0**attempts - 1  # 1 + 2 + 4 + ... seconds
    if waited >= wait_seconds:
        return None
    return min(2.0**attempts, wait_seconds - waited)


def _reaction_of(event: dict[str, Any]) -> tuple[str, str] | None:
    """(the event reacted to, the emoji) of an m.reaction a customer's channel could show."""
    rel = _object(_object(event.get("content")).get("m.relates_to"))
    target, emoji = rel.get("event_id"), rel.get("key")
    if rel.get("rel_type") != "m.annotation" or not isinstance(target, str):
        return None
    if not isinstance(emoji, str) or not emoji or len(emoji) > 16:
        return None
    return target, emoji


class Dispatcher:
    def __init__(
        self,
        db: Database,
        is_own: Callable[[str], bool],
        commands: CommandRegistry[CommandHandler],
        runner: CommandRunner,
        prefix: str,
        advisers: Iterable[str] | None = None,
        *,
        decryptor: Decryptor | None = None,
        key_wait_seconds: float = 20.0,
        channels: Mapping[str, ChannelTraits] | None = None,
        others_may_answer: bool = True,
        notes: NotesConfig | None = None,
    ) -> None:
        """`advisers`: who speaks to the customer (default: those the runner lets run
        commands, i.e. `shop.advisers`). `decryptor`: end-to-bridge encryption (None: the
        hub does not take part in encrypted rooms); `key_wait_seconds`: how long an event
        whose room key has not arrived yet is retried. `channels`: the enabled channels by
        kind, for what they can pass on (None: every change is queued, and the sender
        finds out). `others_may_answer`: `routing.others_may_answer`; `notes`: the private
        notes' settings (default: `//` and threads)."""
        self.db = db
        self.is_own = is_own
        self.commands = commands
        self.runner = runner
        self.prefix = prefix
        self.advisers = runner.advisers if advisers is None else frozenset(advisers)
        self.decryptor = decryptor
        self.key_wait_seconds = key_wait_seconds
        self.channels = channels
        self.others_may_answer = others_may_answer
        self.notes = notes if notes is not None else NotesConfig()

    @handles(kinds.MATRIX_EVENT, preload=conversations.preload_room)
    async def handle(self, job: Job) -> Finish | None:
        event = job.payload
        if self.is_own(event["sender"]):
            return None
        if event["type"] == ENCRYPTED:
            try:
                event = await self._decrypt(job)
            except _Unreadable as exc:
                return self._unreadable(event, await self._conversation(job), exc)
        return await self._handle_event(job, event)

    async def _decrypt(self, job: Job) -> dict[str, Any]:
        """The plaintext of an encrypted event, RetryLater while its key may still come, or
        _Unreadable."""
        event = job.payload
        if self.decryptor is None:
            raise _Unreadable("no_encryption", "the hub does not take part in encrypted rooms")
        try:
            plain = await self.decryptor.decrypt(event)
        except RoomKeyMissing as exc:
            delay = key_retry_delay(job.attempts, self.key_wait_seconds)
            if delay is not None:
                raise RetryLater(f"room key of {event['event_id']} not here yet", delay) from None
            raise _Unreadable("no_key", exc.reason) from None
        except Undecryptable as exc:
            raise _Unreadable("broken", exc.reason) from None
        # Relations stay in the clear part of an encrypted event (so the homeserver can
        # aggregate edits and threads): without it an encrypted edit would look new.
        relates = _object(event.get("content")).get("m.relates_to")
        content = _object(plain.get("content"))
        if isinstance(relates, dict) and "m.relates_to" not in content:
            plain = {**plain, "content": {**content, "m.relates_to": relates}}
        # Who sent it, where and as which event is what the homeserver vouches for, not what
        # the ciphertext claims: the advisers-only rule and every idempotency key rest on it.
        return {
            **plain,
            "event_id": event["event_id"],
            "room_id": event["room_id"],
            "sender": event["sender"],
        }

    async def _handle_event(self, job: Job, event: dict[str, Any]) -> Finish | None:
        """A clear event (as pushed, or decrypted): a command, a reply, a change of what the
        customer got, or nothing."""
        if event["type"] == "m.reaction":
            reaction = _reaction_of(event)
            if reaction is None:
                return None
            conversation = await self._conversation(job)
            if event["sender"] not in self.advisers:
                return self._not_relayed(event, conversation)
            return self._reaction(event, conversation, *reaction)
        if event["type"] == REDACTION:
            return await self._redaction(job, event)
        if event["type"] != "m.room.message":
            return None
        content = _object(event.get("content"))
        conversation = await self._conversation(job)
        body = content.get("body")
        # An edit's body is the new text ("* ..."), never a command to run again.
        editing = _object(content.get("m.relates_to")).get("rel_type") == "m.replace"
        if content.get("msgtype") == "m.text" and isinstance(body, str) and not editing:
            reply_to = _reply_target(content)
            if reply_to is not None:
                # Older clients quote the replied-to message above the command.
                body = strip_reply_fallback(body, None)[0]
            parsed = parse(body, self.prefix, self.commands)
            if not isinstance(parsed, NotACommand):
                return self._command(event, conversation, parsed, reply_to)
        if conversation is None:
            return None
        edit = edit_of(content)
        if edit is not None:
            return self._edit(event, conversation, *edit)
        values = outbound_values(event, conversation)
        if values is None:
            return None
        if is_note(content, self.notes.prefix, self.notes.threads):
            return None  # a private note, meant to stay in the room: nobody needs telling
        if event["sender"] not in self.advisers:
            return self._not_relayed(event, conversation)
        reply_event = values.pop("_reply_event", None)

        def finish(tx: Tx) -> None:
            if not self._may_answer(tx, event, conversation):
                return
            outbound.adviser_message(tx, conversation.id, values, reply_event)

        return finish

    def _may_answer(self, tx: Tx, event: dict[str, Any], conversation: Conversation) -> bool:
        """Whether the adviser's message or reaction may reach the customer; when not, the
        room is told once per sender and conversation. Read in the writing transaction: the
        assignee may have changed since the job was leased."""
        if self.others_may_answer:
            return True
        current = conversations.conversation(tx, conversation.id)
        if current is None:
            return False
        sender = event["sender"]
        if may_answer(current.assignee, sender, self.others_may_answer):
            return True
        log.info(
            "%s from %s in %s not relayed to the customer: %s has the conversation",
            event["event_id"],
            sender,
            event["room_id"],
            current.assignee,
        )
        if not _first_time(tx, current, _NOT_ASSIGNEE_TOLD, sender):
            return False
        # TRANSLATORS: {sender} and {assignee} are Matrix IDs (@bob:example.org).
        text = _(
            "{sender} does not have this conversation ({assignee} has it): their messages do "
            "not reach the customer."
        )
        notices.notice(
            tx,
            event["room_id"],
            text.format(sender=sender, assignee=current.assignee),
            f"not-assignee:{current.id}:{sender}",
            reply_to=event["event_id"],
        )
        return False

    def _edit(
        self,
        event: dict[str, Any],
        conversation: Conversation,
        target_event: str,
        text: str,
        html: str | None,
    ) -> Finish | None:
        """An edit of a message: passed on when it is an adviser's own message the customer
        got (Matrix lets only the sender edit; the hub does not trust every client to)."""
        sender = event["sender"]
        if sender not in self.advisers:
            return None  # a non-adviser's message never reached the customer to be edited

        def finish(tx: Tx) -> None:
            target = outbound.relayed_message(tx, target_event)
            if target is None or target.sender_mxid != sender:
                return
            if target.kind != "text" and target.media and text == target.media.get("filename"):
                new_text: str | None = None  # a file's body is its name, not a caption
            else:
                new_text = text
            if not new_text and target.kind == "text":
                return
            if self._can(target, "edit"):
                outbound.queue_edit(tx, target, new_text or "", html, event["event_id"])
            else:
                self._cannot(tx, event, conversation, target.channel, "edit")

        return finish

    async def _redaction(self, job: Job, event: dict[str, Any]) -> Finish | None:
        """An adviser removed a message or a reaction: take it back from the customer."""
        target_event = _redacted(event)
        if target_event is None or event["sender"] not in self.advisers:
            return None
        conversation = await self._conversation(job)
        if conversation is None:
            return None

        def finish(tx: Tx) -> None:
            target = outbound.relayed_message(tx, target_event)
            if target is not None:
                if self._can(target, "delete"):
                    outbound.queue_delete(tx, target, event["event_id"])
                else:
                    self._cannot(tx, event, conversation, target.channel, "delete")
                return
            reacted = outbound.relayed_reaction(tx, target_event)
            if reacted is not None:
                outbound.queue_reaction(tx, reacted, "", event["event_id"])

        return finish

    def _can(self, message: Message, change: str) -> bool:
        """Whether the channel of `message` can pass `change` on (unknown channels are
        given the job: the sender asks the channel itself)."""
        traits = self.channels.get(message.channel) if self.channels is not None else None
        return traits is None or bool(getattr(traits.capabilities, _CAPABILITY[change]))

    def _cannot(
        self,
        tx: Tx,
        event: dict[str, Any],
        conversation: Conversation,
        channel: str,
        change: str,
    ) -> None:
        """Tell the room, once per conversation and kind of change, that the customer's
        channel cannot pass such changes on (per message would flood a busy room)."""
        current = conversations.conversation(tx, conversation.id)
        if current is None or not current.room_id:
            return
        if not _first_time(tx, current, _CANNOT_TOLD, change):
            return
        traits = self.channels.get(channel) if self.channels is not None else None
        label = _(traits.label) if traits is not None else channel
        notices.notice(
            tx,
            current.room_id,
            "ℹ️ " + _(_CANNOT[change]).format(channel=label),
            f"cannot:{current.id}:{change}",
            reply_to=event["event_id"],
        )

    def _command(
        self,
        event: dict[str, Any],
        conversation: Conversation | None,
        parsed: Any,
        reply_to: str | None,
    ) -> Finish:
        def finish(tx: Tx) -> None:
            ctx = CommandContext(
                tx,
                event["room_id"],
                event["event_id"],
                event["sender"],
                conversation,
                reply_to=reply_to,
            )
            self.runner.run(ctx, parsed)

        return finish

    @staticmethod
    def _unreadable(
        event: dict[str, Any], conversation: Conversation | None, why: _Unreadable
    ) -> Finish | None:
        """An encrypted event the hub cannot read: logged and counted; a portal room is told
        once per conversation (advisers would otherwise wait for answers to replies the
        customer never got)."""
        room_id = event["room_id"]
        log.warning(
            "encrypted event %s in %s from %s not relayed to the customer: %s (%s)",
            event["event_id"],
            room_id,
            event["sender"],
            why.code,
            why.detail,
        )
        UNDECRYPTABLE_EVENTS.labels(why.code).inc()
        if conversation is None:
            return None  # not a portal: nothing would have been relayed anyway
        if why.code == "no_encryption":
            reason = _(
                "the hub does not take part in encrypted rooms (encryption.enabled is off in "
                "its configuration)"
            )
        elif why.code == "no_key":
            reason = _(
                "the hub's device did not receive the key of this message (the sending "
                "device may not trust it; sending again may help)"
            )
        else:
            reason = _(
                "the hub could not decrypt it (the message is damaged or uses an encryption "
                "the hub does not know)"
            )
        # TRANSLATORS: {reason} is one of the reasons above, starting in lower case.
        text = _("🔒 This message is encrypted and cannot reach the customer: {reason}").format(
            reason=reason
        )

        def finish(tx: Tx) -> None:
            current = conversations.conversation(tx, conversation.id)
            if current is None or (current.meta or {}).get(_ENCRYPTED_TOLD):
                return
            conversations.set_meta(tx, current.id, **{_ENCRYPTED_TOLD: True})
            notices.notice(
                tx, room_id, text, f"undecryptable:{current.id}", reply_to=event["event_id"]
            )

        return finish

    async def _conversation(self, job: Job) -> Conversation | None:
        """The conversation of the event's room (read where the job was leased), if any."""
        if isinstance(job.context, conversations.RoomConversation):
            return job.context.conversation
        return await self.db.read(conversations.conversation_by_room, job.payload["room_id"])

    def _reaction(
        self,
        event: dict[str, Any],
        conversation: Conversation | None,
        target_event: str,
        emoji: str,
    ) -> Finish:
        """An adviser reacted to a customer's message: pass it on where the channel can."""

        def finish(tx: Tx) -> None:
            target = outbound.reaction_target_by_event(tx, target_event)
            if target is None:
                return
            if conversation is not None and not self._may_answer(tx, event, conversation):
                return
            if self._can(target, "reaction"):
                outbound.queue_reaction(tx, target, emoji, event["event_id"])
            elif conversation is not None:
                self._cannot(tx, event, conversation, target.channel, "reaction")

        return finish

    @staticmethod
    def _not_relayed(event: dict[str, Any], conversation: Conversation | None) -> Finish | None:
        """Someone who is not an adviser wrote (or reacted) in a portal room: it stays in
        the room, and the room is told once per sender and conversation."""
        if conversation is None:
            return None  # not a portal: nothing would have been relayed anyway
        sender, room_id = event["sender"], event["room_id"]
        log.info(
            "%s from %s in %s not relayed to the customer: not an adviser",
            event["event_id"],
            sender,
            room_id,
        )

        def finish(tx: Tx) -> None:
            current = conversations.conversation(tx, conversation.id)
            if current is None or not _first_time(tx, current, _TOLD, sender):
                return
            # TRANSLATORS: {sender} is a Matrix ID (@bob:example.org) in the portal room.
            text = _(
                "{sender} is not one of the shop's advisers: their messages do not reach "
                "the customer."
            )
            notices.notice(
                tx,
                room_id,
                text.format(sender=sender),
                f"not-adviser:{current.id}:{sender}",
                reply_to=event["event_id"],
            )

        return finish


def _strings(value: object) -> list[str]:
    """A list of strings kept in a conversation's `meta` (anything else: empty)."""
    return [m for m in value if isinstance(m, str)] if isinstance(value, list) else []


def _first_time(tx: Tx, conversation: Conversation, meta_key: str, item: str) -> bool:
    """Whether the room has not been told about `item` yet under `meta_key` (a list in the
    conversation's `meta`), recording it: the notices a room gets once per conversation and
    sender or kind, not per message."""
    told = _strings((conversation.meta or {}).get(meta_key))
    if item in told:
        return False
    conversations.set_meta(tx, conversation.id, **{meta_key: [*told, item]})
    return True
