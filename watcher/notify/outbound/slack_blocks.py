"""Render an IncidentMessage as Slack Block Kit, with the plain `text` fallback.

Slack's limits are applied here (header 150 characters, section text 3000, field 2000, button
value 2000) by shortening, so a long query or summary can never make Slack refuse the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from watcher.model import IncidentStatus, Severity
from watcher.notify.outbound.message import (
    ActionButton,
    ButtonAction,
    Code,
    IncidentMessage,
    Link,
    Span,
    Text,
    Time,
    TimelineEntry,
    UserRef,
    timeline_text,
)

Block = dict[str, Any]

_HEADER_LIMIT = 150
_SECTION_LIMIT = 3000
_FIELD_LIMIT = 2000
_CODE_LIMIT = 1500  # a long SQL query must leave room for the rest of the evidence
_FALLBACK_LIMIT = 3000
_CONFIRM_LIMIT = 300

_SEVERITY_EMOJI = {
    Severity.CRITICAL: ":red_circle:",
    Severity.WARNING: ":large_orange_circle:",
    Severity.INFO: ":large_blue_circle:",
}
_RESOLVED_EMOJI = ":white_check_mark:"


@dataclass(frozen=True)
class SlackPayload:
    """What chat.postMessage and chat.update take: fallback text and blocks."""

    text: str
    blocks: list[Block]


def render_incident(message: IncidentMessage) -> SlackPayload:
    return SlackPayload(text=render_fallback(message), blocks=render_blocks(message))


def render_blocks(message: IncidentMessage) -> list[Block]:
    blocks: list[Block] = [_header(message), _overview(message)]
    blocks.append(_mrkdwn_section(mrkdwn(message.activity)))
    if message.evidence:
        blocks.append(_mrkdwn_section("\n".join(mrkdwn(line) for line in message.evidence)))
    if message.actions:
        blocks.append(_actions(message))
    if message.footer:
        elements = [{"type": "mrkdwn", "text": mrkdwn(item)} for item in message.footer[:10]]
        blocks.append({"type": "context", "elements": elements})
    return blocks


def render_fallback(message: IncidentMessage) -> str:
    """The notification text: what a phone or a screen reader shows instead of the blocks."""
    parts = [f"{message.title}: {message.headline}"]
    if message.summary:
        parts.append(message.summary)
    parts.append(plain(message.activity))
    return _shorten(escape(" — ".join(parts)), _FALLBACK_LIMIT)


def render_thread_reply(entry: TimelineEntry) -> str:
    """One incident step as the text of a reply in the incident message's thread."""
    return _shorten(mrkdwn(timeline_text(entry)), _SECTION_LIMIT)


def button_value(incident_id: int, action: ButtonAction) -> str:
    """The button's value names the incident and the action, nothing else."""
    return json.dumps({"incident": incident_id, "action": action.value})


def _header(message: IncidentMessage) -> Block:
    resolved = message.status is IncidentStatus.RESOLVED
    emoji = _RESOLVED_EMOJI if resolved else _SEVERITY_EMOJI[message.severity]
    text = _shorten(f"{emoji} {message.title}", _HEADER_LIMIT)
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def _overview(message: IncidentMessage) -> Block:
    text = f"*{escape(message.headline)}*"
    if message.summary:
        text += f"\n{escape(message.summary)}"
    fields = [
        {"type": "mrkdwn", "text": _shorten(f"*{escape(label)}*\n{escape(value)}", _FIELD_LIMIT)}
        for label, value in message.fields[:10]
    ]
    section = _mrkdwn_section(text)
    if fields:
        section["fields"] = fields
    return section


def _mrkdwn_section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _shorten(text, _SECTION_LIMIT)}}


def _actions(message: IncidentMessage) -> Block:
    return {
        "type": "actions",
        "block_id": f"incident-{message.incident_id}",
        "elements": [_button(message.incident_id, button) for button in message.actions],
    }


def _button(incident_id: int, button: ActionButton) -> Block:
    element: Block = {
        "type": "button",
        "action_id": button.action.value,
        "text": {"type": "plain_text", "text": button.action.label},
        "value": button_value(incident_id, button.action),
    }
    if button.action is ButtonAction.ROLLBACK:
        element["style"] = "danger"
    if button.confirm is not None:
        element["confirm"] = _confirm_dialog(button)
    return element


def _confirm_dialog(button: ActionButton) -> Block:
    return {
        "title": {"type": "plain_text", "text": f"{button.action.label}?"},
        "text": {"type": "mrkdwn", "text": _escape_within(button.confirm or "", _CONFIRM_LIMIT)},
        "confirm": {"type": "plain_text", "text": button.action.label},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger",
    }


def mrkdwn(text: Text) -> str:
    return "".join(_mrkdwn_span(span) for span in text)


def _mrkdwn_span(span: Span) -> str:
    if isinstance(span, str):
        return escape(span)
    if isinstance(span, UserRef):
        return f"<@{span.id}>"
    if isinstance(span, Link):
        # "|" ends the address inside <url|text>; it may not appear unencoded in the address.
        return f"<{escape(span.url).replace('|', '%7C')}|{escape(span.text)}>"
    if isinstance(span, Code):
        return _code(span.text)
    at = span.at.astimezone(UTC)
    # Slack shows the time in each reader's own time zone; the fallback is UTC.
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time_secs}}|{_utc(span)}>"


def _code(text: str) -> str:
    # A backtick would end the code span early; no other character needs care inside one.
    body = _escape_within(text.replace("`", "'"), _CODE_LIMIT)
    return f"```{body}```" if "\n" in body else f"`{body}`"


def _escape_within(text: str, limit: int) -> str:
    """Escape and shorten to `limit` without cutting an entity such as &lt; in half."""
    pieces: list[str] = []
    size = 0
    for char in text:
        piece = escape(char)
        if size + len(piece) > limit - 1:
            return "".join(pieces) + "…"
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


def plain(text: Text) -> str:
    """Text without any markup: for the notification fallback and logs."""
    out: list[str] = []
    for span in text:
        if isinstance(span, str):
            out.append(span)
        elif isinstance(span, UserRef):
            out.append(f"@{span.id}")
        elif isinstance(span, Link | Code):
            out.append(span.text)
        else:
            out.append(_utc(span))
    return "".join(out)


def _utc(span: Time) -> str:
    return span.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def escape(text: str) -> str:
    """Slack's three control characters; everything else is shown as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
