"""Outgoing mail through SMTP (``aiosmtplib``), or into the log while developing.

``TASKMANAGER_SMTP_URL`` is ``smtp://[user:password@]host[:port]`` (STARTTLS when the server
offers it) or ``smtps://...`` (TLS from the first byte); ``TASKMANAGER_MAIL_FROM`` is the
sender. Without an SMTP URL, outside production each message is written to the log (at
WARNING, so a developer sees the reset link in the console); in production mail cannot be
sent and ``Mailer.available`` is False, which the routes that need mail answer with 503.
"""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import structlog

from taskmanager.kit.config import Environment, Settings

log = structlog.get_logger("taskmanager.mail")


class MailError(Exception):
    """The SMTP server could not be reached or refused the message."""


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.smtp_url
        self.sender = settings.mail_from or "Taskmanager <noreply@localhost>"
        self.timeout = settings.smtp_timeout_seconds
        self.to_log = not self.url and settings.env is not Environment.PRODUCTION

    @property
    def available(self) -> bool:
        """Whether a message sent now goes anywhere (SMTP, or the development log)."""
        return bool(self.url) or self.to_log

    def message(self, to: str, subject: str, text: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        return message

    async def send(self, message: EmailMessage) -> None:
        """Deliver ``message``. Raises MailError when the SMTP server fails."""
        if not self.url:
            if self.to_log:
                log.warning(
                    "mail_written_to_log",
                    reason="TASKMANAGER_SMTP_URL is not set",
                    to=message["To"],
                    subject=message["Subject"],
                    text=message.get_content(),
                )
                return
            raise MailError("no SMTP server is configured")
        import aiosmtplib  # on first use: start-up does not pay for it

        url = urlsplit(self.url)
        try:
            await aiosmtplib.send(
                message,
                hostname=url.hostname,
                port=url.port,
                username=unquote(url.username) if url.username else None,
                password=unquote(url.password) if url.password else None,
                use_tls=url.scheme == "smtps",
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
