#!/usr/bin/env python3
"""The serial reference converter for scripts/bench.sh: what the public conversion scripts do
(reference/prior-art.md), one request at a time over one kept-alive HTTPS connection:

  for each user:  GET the user  -> PATCH otherMails + mail  -> GET the user  -> POST /invitations
  (a GET before each write; on 429 or 503: sleep Retry-After, else 1 s, and send it again)

It converts the emulator tenant's `serialNNNNNN@bench.example.com` users (scripts/bench/tenant.py
--serial M) and prints one JSON line: accounts converted, seconds, requests, 429s received.

Usage: serial-convert.py --base URL --ca CA.pem --tenant ID --client-id ID --count N [--first K]
       (the client secret from $BENCH_GRAPH_SECRET)
"""
import argparse
import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from graph_client import Graph  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first", type=int, default=1, help="number of the first serialNNNNNN user")
    a = p.parse_args()
    g = Graph(a.base, a.ca)
    g.login(a.tenant, a.client_id, os.environ["BENCH_GRAPH_SECRET"])
    select = "$select=id,userPrincipalName,mail,otherMails,externalUserState"
    converted = 0
    started = time.monotonic()
    for i in range(a.first, a.first + a.count):
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
