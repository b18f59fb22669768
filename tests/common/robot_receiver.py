"""Stands in for the chat robots, an SMS provider and a webhook receiver in
the duty-alert tests. Each request is checked the way the real peer checks
it, with Python's own hmac (an implementation independent of the gateway's),
answered as that peer answers, and recorded as one JSON line.

usage: robot_receiver.py PORT LOG --dingtalk-secret S --feishu-secret S
       --webhook-secret S --wecom-key K
"""
import argparse
import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("log")
p.add_argument("--dingtalk-secret", default="")
p.add_argument("--feishu-secret", default="")
p.add_argument("--webhook-secret", default="")
p.add_argument("--wecom-key", default="")
p.add_argument("--mode", default="")
args = p.parse_args()
lock = threading.Lock()


def sign(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_any(b"")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.handle_any(self.rfile.read(n))

    def handle_any(self, body):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        q = lambda k: (query.get(k) or [""])[0]
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        verified = False
        mode = {}
        if args.mode:
            try:
                with open(args.mode, encoding="utf-8") as f:
                    mode = json.load(f)
            except (OSError, ValueError):
                mode = {}
        if mode.get("status"):
            # Told to be down (a 503 from a proxy, a robot's outage).
            status, reply = int(mode["status"]), {"error": "down"}
        elif url.path.startswith("/dingtalk/"):
            ts, s = q("timestamp"), q("sign")
            want = base64.b64encode(sign(args.dingtalk_secret.encode(), f"{ts}\n{args.dingtalk_secret}".encode())).decode()
            verified = hmac.compare_digest(s, want) and q("access_token") != ""
            status, reply = 200, ({"errcode": 0, "errmsg": "ok"} if verified else {"errcode": 310000, "errmsg": "sign not match"})
        elif url.path.startswith("/feishu/"):
            ts, s = (doc or {}).get("timestamp", ""), (doc or {}).get("sign", "")
            want = base64.b64encode(sign(f"{ts}\n{args.feishu_secret}".encode(), b"")).decode()
            verified = hmac.compare_digest(s, want)
            status, reply = 200, ({"code": 0, "msg": "success"} if verified else {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"})
        elif url.path.startswith("/wecom/"):
            verified = q("key") == args.wecom_key
            status, reply = 200, ({"errcode": 0, "errmsg": "ok"} if verified else {"errcode": 93000, "errmsg": "invalid webhook url"})
        elif url.path.startswith("/webhook"):
            want = "sha256=" + hmac.new(args.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
            verified = hmac.compare_digest(self.headers.get("X-Campusgw-Signature", ""), want)
            status, reply = (200, {"ok": True}) if verified else (401, {"error": "bad signature"})
        elif url.path.startswith("/sms"):
            verified = self.headers.get("Authorization", "") != ""
            status, reply = 200, {"Code": "OK", "Message": "OK"}
        else:
            status, reply = 404, {"error": "no such robot"}
        record = {
            "method": self.command,
            "path": url.path,
            "query": {k: v[0] for k, v in query.items()},
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "json": doc,
            "verified": verified,
        }
        with lock, open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.answer(status, reply)


ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
