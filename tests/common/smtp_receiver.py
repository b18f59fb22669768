"""A real SMTP server (aiosmtpd) for the email tests: every message it takes
is parsed with Python's own email package and written as one JSON line
(envelope, headers as sent, the decoded subject and body). A mode file can
make it answer DATA with an SMTP error (a 4xx or 5xx reply line).

usage: smtp_receiver.py PORT LOG MODE [--user U --password P]
"""
import argparse
import email
import email.policy
import json
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("log")
p.add_argument("mode")
p.add_argument("--user", default="")
p.add_argument("--password", default="")
args = p.parse_args()
lock = threading.Lock()


def mode():
    try:
        with open(args.mode, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Handler:
    async def handle_DATA(self, server, session, envelope):
        reply = mode().get("reply")
        raw = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        as_sent = email.message_from_bytes(raw, policy=email.policy.compat32)
        body = parsed.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth": session.authenticated,
            "headers": {k.lower(): str(v) for k, v in as_sent.items()},
            "subject": str(parsed["subject"]),
            "content_type": parsed.get_content_type(),
            "charset": parsed.get_content_charset(),
            "body": body.get_content() if body is not None else "",
            "refused": reply or None,
        }
        with lock, open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return reply or "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login.decode() == args.user and auth_data.password.decode() == args.password
    # handled=False: aiosmtpd itself answers a refusal with 535.
    return AuthResult(success=ok, handled=False)


kwargs = {}
if args.user:
    kwargs = dict(authenticator=authenticator, auth_require_tls=False, auth_required=True)
controller = Controller(Handler(), hostname="127.0.0.1", port=args.port, **kwargs)
controller.start()
while True:
    time.sleep(3600)
