"""Press a button of an incident's Slack message, as Slack would deliver the press to watcher.

    python -m scenario.press --incident 1 --action undo

Sends POST /slack/actions to the running scenario's daemon with a block_actions payload whose
button value is {"incident": ID, "action": ACTION}, from the scenario's approver in the fake
Slack's team, signed with the run's signing secret (v0 HMAC-SHA256 of "v0:{ts}:{body}").
The settings come from scenario-run/press.json; SLACK_SIGNING_SECRET in the environment wins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scenario.fake_slack import block_actions_payload, sign

RUN_DIR = Path(__file__).resolve().parent.parent / "scenario-run"
ACTIONS = ("rollback", "undo", "ack", "silence")


@dataclass(frozen=True)
class PressSettings:
    watcher_url: str
    signing_secret: str
    team_id: str
    approver: str


@dataclass(frozen=True)
class PressFailure:
    message: str


@dataclass(frozen=True)
class SignedPress:
    url: str
    body: bytes
    headers: dict[str, str]


def load_settings(run_dir: Path, environ: Mapping[str, str]) -> PressSettings | PressFailure:
    path = run_dir / "press.json"
    try:
        saved: dict[str, Any] = json.loads(path.read_text())
    except OSError:
        return PressFailure(f"{path} is missing: start the scenario with --keep-running first")
    except ValueError:
        return PressFailure(f"{path} is not JSON")
    if not saved.get("team_id"):
        return PressFailure("the scenario runs against real Slack: press the buttons in Slack")
    secret = environ.get("SLACK_SIGNING_SECRET") or saved.get("signing_secret")
    if not secret:
        return PressFailure("no signing secret: set SLACK_SIGNING_SECRET")
    if not saved.get("approver"):
        return PressFailure("the scenario's config names no approver (set SLACK_APPROVERS for real Slack)")
    return PressSettings(
        watcher_url=str(saved["watcher_url"]),
        signing_secret=str(secret),
        team_id=str(saved["team_id"]),
        approver=str(saved["approver"]),
    )


def signed_press(settings: PressSettings, incident: int, action: str, *, at: float) -> SignedPress:
    """The request Slack sends at unix time `at` when the approver presses `action`."""
    value = json.dumps({"incident": incident, "action": action})
    payload = block_actions_payload(
        value, action, user=settings.approver, team=settings.team_id, action_ts=f"{at:.6f}"
    )  # a fresh action_ts: a new press, not a redelivery
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        **sign(settings.signing_secret, int(at), body),
    }
    return SignedPress(url=f"{settings.watcher_url}/slack/actions", body=body, headers=headers)


def send(press: SignedPress) -> tuple[int, str]:
    request = urllib.request.Request(press.url, data=press.body, headers=press.headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scenario.press",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--incident", type=int, required=True)
    parser.add_argument("--action", choices=ACTIONS, required=True)
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    args = parser.parse_args(argv)
    settings = load_settings(args.run_dir, os.environ)
    if isinstance(settings, PressFailure):
        print(f"scenario.press: {settings.message}", file=sys.stderr)
        return 2
    press = signed_press(settings, args.incident, args.action, at=time.time())
    try:
        status, answer = send(press)
    except (OSError, urllib.error.URLError) as error:
        print(
            f"scenario.press: {press.url} does not answer ({error}); is the scenario running?",
            file=sys.stderr,
        )
        return 1
    print(f"{status} {answer.strip()}" if answer.strip() else str(status))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
