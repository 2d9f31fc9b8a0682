#!/usr/bin/env python3
"""The serial reference converter for scripts/bench.sh: what the public conversion scripts do
(reference/prior-art.md), one request at a time over one kept-alive HTTPS connection:

  for each user:  GET the user  -> PATCH otherMails + mail  -> GET the user  -> POST /invitations
  (a GET before each write; on 429 or 503: sleep Retry-After, else 1 s, and send it again)

It converts the emulator tenant's `serialNNNNNN@bench.example.com` users (scripts/bench/tenant.py
--serial M) and prints one JSON line: accounts converted, seconds, requests, 429s received.

Usage: serial-convert.py --base URL --ca CA.pem --tenant ID --client-id ID --count N
       (the client secret from $BENCH_GRAPH_SECRET)
"""
import argparse
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse
import uuid


class Graph:
    def __init__(self, base, ca):
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname, url.port or 443
        self.ctx = ssl.create_default_context(cafile=ca)
        self.conn = None
        self.token = None
        self.requests = 0
        self.throttled = 0

    def _connection(self):
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
        return self.conn

    def raw(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        for attempt in range(2):
            try:
                conn = self._connection()
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                return resp.status, resp.headers, payload
            except (http.client.HTTPException, OSError):
                # a dropped keep-alive connection: reconnect once
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def login(self, tenant, client_id, secret):
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
            "scope": "https://graph.microsoft.com/.default",
        })
        status, _, payload = self.raw("POST", f"/{tenant}/oauth2/v2.0/token", form,
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            sys.exit(f"token: {status} {payload[:200]!r}")
        self.token = json.loads(payload)["access_token"]

    def call(self, method, path, body=None):
        """One Graph call; sleeps and repeats on 429/503 as the public scripts do."""
        while True:
            self.requests += 1
            status, headers, payload = self.raw(method, "/v1.0" + path, body, {
                "Authorization": f"Bearer {self.token}",
                "client-request-id": str(uuid.uuid4()),
            })
            if status in (429, 503):
                self.throttled += status == 429
                time.sleep(float(headers.get("Retry-After") or 1))
                continue
            if status >= 400:
                raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
            return json.loads(payload) if payload else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--count", type=int, required=True)
    a = p.parse_args()
    g = Graph(a.base, a.ca)
    g.login(a.tenant, a.client_id, os.environ["BENCH_GRAPH_SECRET"])
    select = "$select=id,userPrincipalName,mail,otherMails,externalUserState"
    converted = 0
    started = time.monotonic()
    for i in range(1, a.count + 1):
        name = "serial" + str(i).zfill(6)
        upn = urllib.parse.quote(f"{name}@bench.example.com")
        email = f"{name}@bulk-partner.example"
        user = g.call("GET", f"/users/{upn}?{select}")
        g.call("PATCH", f"/users/{user['id']}", {"otherMails": [email], "mail": email})
        user = g.call("GET", f"/users/{user['id']}?{select}")
        if user.get("externalUserState"):
            continue
        g.call("POST", "/invitations", {
            "invitedUserEmailAddress": email,
            "inviteRedirectUrl": "https://myapps.microsoft.com",
            "sendInvitationMessage": False,
            "invitedUser": {"id": user["id"]},
        })
        converted += 1
    seconds = time.monotonic() - started
    print(json.dumps({"accounts": converted, "seconds": round(seconds, 3),
                      "requests": g.requests, "throttled": g.throttled}))


if __name__ == "__main__":
    main()
