"""A minimal Graph client for the benchmark's Python helpers: one kept-alive HTTPS connection,
client-credentials token, and sleep-and-repeat on 429/503 as the public scripts do."""
import http.client
import json
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
