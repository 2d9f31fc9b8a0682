#!/usr/bin/env python3
"""How long the emulator alone takes to serve the whole user list b2bsync reads (the same
`$select` and `$top=999`, following `@odata.nextLink`), without b2bsync: the floor under the
no-change run's wall time that belongs to the emulator, not to b2bsync.

Usage: read-users.py --base URL --ca CA.pem --tenant ID --client-id ID --select LIST
       (the client secret from $BENCH_GRAPH_SECRET); prints one JSON line.
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
    p.add_argument("--select", required=True)
    a = p.parse_args()
    g = Graph(a.base, a.ca)
    g.login(a.tenant, a.client_id, os.environ["BENCH_GRAPH_SECRET"])
    path = f"/users?$select={a.select}&$top=999"
    users = pages = 0
    started = time.monotonic()
    while path:
        page = g.call("GET", path)
        pages += 1
        users += len(page["value"])
        nxt = page.get("@odata.nextLink")
        path = None
        if nxt:
            u = urllib.parse.urlsplit(nxt)
            path = u.path.removeprefix("/v1.0") + ("?" + u.query if u.query else "")
    print(json.dumps({"pages": pages, "users": users, "seconds": round(time.monotonic() - started, 3)}))


if __name__ == "__main__":
    main()
