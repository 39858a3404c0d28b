"""E-mail over SMTP with STARTTLS (aiosmtplib).

``url`` is ``smtp://host:port`` (587 by default); options: ``from``, ``to`` (comma-separated),
``username`` (login with the password of ``secret_ref``), ``ca_file`` (a private CA to trust).
STARTTLS is required: a server that does not offer it fails the attempt, never sending in clear.
``Message-ID`` is derived from the notification id, so a receiving system de-duplicates replays.
SMTP 4xx replies and lost connections are retried; 5xx replies are final.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import urlsplit

import aiosmtplib

from integrations import render, secrets
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome

DEFAULT_PORT = 587


def message(n: Notification) -> EmailMessage:
    options = n.receiver.options
    msg = EmailMessage()
    msg["From"] = options.get("from", "m1-analytics@localhost")
    msg["To"] = ", ".join(a.strip() for a in options.get("to", "").split(",") if a.strip())
    msg["Subject"] = render.title(n)
    msg["Message-ID"] = f"<{n.id}@m1-analytics>"
    msg["Date"] = formatdate(n.created_ts or None, usegmt=True)
    msg["X-M1-Incident"] = render.incident_id(n)
    msg.set_content(render.text(n))
    return msg


def payload(n: Notification) -> dict[str, object]:
    """The message's envelope and headers (what the JSON Schema checks)."""
    msg = message(n)
    return {"from": msg["From"], "to": [a.strip() for a in msg["To"].split(",") if a.strip()],
            "subject": msg["Subject"], "message_id": msg["Message-ID"], "body": msg.get_content()}


async def deliver(ctx: Context, n: Notification) -> Outcome:
    target = urlsplit(secrets.maybe_ref(n.receiver.url))
    options = n.receiver.options
    tls = ssl.create_default_context(cafile=options.get("ca_file") or None)
    username = options.get("username") or None
    try:
        errors, reply = await aiosmtplib.send(
            message(n), hostname=target.hostname or "127.0.0.1", port=target.port or DEFAULT_PORT,
            start_tls=True, tls_context=tls, username=username,
            password=secrets.resolve(n.receiver.secret_ref) if username else None, timeout=ctx.timeout)
    except aiosmtplib.SMTPResponseException as exc:
        return Outcome(False, 400 <= exc.code < 500, exc.code, f"smtp {exc.code}: {exc.message}"[:300])
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Outcome(False, True, 0, f"smtp: {type(exc).__name__}: {exc}"[:300])
    if errors:  # some recipients refused: the others have it; report, do not resend to all
        return Outcome(False, False, 550, f"smtp: recipients refused: {sorted(errors)}"[:300])
    return Outcome(True, status=250, reason=reply[:100])
