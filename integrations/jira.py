"""Jira Cloud REST API v3: a trigger creates an issue (``POST /rest/api/3/issue``, description in
Atlassian Document Format); an acknowledgement or a resolve comments on it
(``POST /rest/api/3/issue/{key}/comment``).

Jira has no idempotency key, so each write is preceded by a look-up: the issue carries the labels
``m1-inc-<incident>`` and ``m1-n-<notification>`` and is created only if the enhanced search
(``POST /rest/api/3/search/jql``) finds no issue with the notification's label; a comment carries
``[m1:<notification id>]`` and is added only if no comment of the issue has it. (Jira's search
index trails a create by a moment, so two replays within that moment could still both create.)

Options: ``project`` (key), ``issue_type`` (default ``Task``), ``user`` (the account e-mail for
basic auth with the API token of ``secret_ref``; without it the token is sent as a bearer token).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from integrations import render, secrets
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome, request


def label(prefix: str, value: str) -> str:
    """A Jira label (no spaces) naming ``value``."""
    return f"m1-{prefix}-{hashlib.sha256(value.encode()).hexdigest()[:20]}"


def marker(n: Notification) -> str:
    return f"[m1:{n.id}]"


def adf(text: str, heading: str = "") -> dict[str, Any]:
    """Plain text as an Atlassian Document Format document: one paragraph per line (blank lines
    dropped), an optional level-3 heading first."""
    content: list[dict[str, Any]] = []
    if heading:
        content.append({"type": "heading", "attrs": {"level": 3}, "content": [{"type": "text", "text": heading}]})
    content += [{"type": "paragraph", "content": [{"type": "text", "text": line}]}
                for line in text.splitlines() if line.strip()]
    return {"type": "doc", "version": 1, "content": content}


def issue_payload(n: Notification) -> dict[str, Any]:
    options = n.receiver.options
    return {"fields": {
        "project": {"key": options.get("project", "OPS")},
        "issuetype": {"name": options.get("issue_type", "Task")},
        "summary": render.title(n)[:255],
        "description": adf(render.text(n) + "\n" + marker(n)),
        "labels": ["m1", label("inc", render.incident_id(n)), label("n", n.id)],
    }}


def comment_payload(n: Notification) -> dict[str, Any]:
    return {"body": adf(render.text(n) + "\n" + marker(n), heading=render.title(n))}


def search_payload(jira_label: str) -> dict[str, Any]:
    return {"jql": f'labels = "{jira_label}"', "fields": ["key"], "maxResults": 1}


def payload(n: Notification) -> dict[str, Any]:
    """The write this notification makes (issue for a trigger, else a comment)."""
    return issue_payload(n) if n.kind == "trigger" else comment_payload(n)


def auth(n: Notification) -> dict[str, str]:
    token = secrets.resolve(n.receiver.secret_ref)
    if user := n.receiver.options.get("user", ""):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}
    return {"Authorization": f"Bearer {token}"}


async def deliver(ctx: Context, n: Notification) -> Outcome:
    base = secrets.maybe_ref(n.receiver.url).rstrip("/") + "/rest/api/3"
    headers = {**auth(n), "Accept": "application/json"}

    async def call(method: str, path: str, body: Any = None) -> Outcome:
        return await request(ctx.session, method, base + path, json_body=body, headers=headers, timeout=ctx.timeout)

    wanted = label("n", n.id) if n.kind == "trigger" else label("inc", render.incident_id(n))
    found = await call("POST", "/search/jql", search_payload(wanted))
    if not found.delivered:
        return found
    issues = (found.body or {}).get("issues") or []
    if n.kind == "trigger":
        return Outcome(True, status=200, reason="exists", body=issues[0]) if issues else await call(
            "POST", "/issue", issue_payload(n))
    if not issues:  # nothing to comment on (the trigger never reached Jira): a final refusal
        return Outcome(False, status=404, reason=f"jira: no issue labelled {wanted}")
    key = issues[0]["key"]
    comments = await call("GET", f"/issue/{key}/comment?maxResults=100&orderBy=-created")
    if not comments.delivered:
        return comments
    if marker(n) in str((comments.body or {}).get("comments", [])):
        return Outcome(True, status=200, reason="exists")
    return await call("POST", f"/issue/{key}/comment", comment_payload(n))
