#!/usr/bin/env python3
"""Checks the output of scripts/demo.sh: what the README promises a new user sees.

Usage: demo-check.py DEMO_OUTPUT STATUS_HTML
"""
import re
import sys

out = open(sys.argv[1], encoding="utf-8").read()
html = open(sys.argv[2], encoding="utf-8").read()
problems = []

# The per-account proof lines: "  p.adams     done    ...   old password: REFUSED (LDAP 49)".
proof = {}
for line in out.splitlines():
    m = re.match(r"\s+(p\.\S+)\s+(\S+)\s+(\S*)\s+old password: (.*)$", line)
    if m:
        proof[m.group(1)] = (m.group(2), m.group(3), m.group(4))
eligible = ["p.adams", "p.baker", "p.chen", "p.dubois"]
blocked = {"p.evans": "mailbox", "p.nomail": "no_address", "p.admin": "admin_count",
           "p.dup1": "address_shared", "p.dup2": "address_shared",
           "p.verified": "address_in_verified_domain", "p.disabled": "disabled"}
for sam in eligible:
    state, _, old = proof.get(sam, ("missing", "", ""))
    if state != "done" or not old.startswith("REFUSED"):
        problems.append(f"{sam}: expected done with the old password refused, got {state!r} / {old!r}")
for sam, reason in blocked.items():
    state, why, old = proof.get(sam, ("missing", "", ""))
    if state != "blocked" or why != reason:
        problems.append(f"{sam}: expected blocked ({reason}), got {state!r} ({why!r})")
    if sam != "p.disabled" and not old.startswith("signs in"):
        problems.append(f"{sam}: a blocked account's password was changed")
for needle in ["all checks passed", "nothing needed changing"]:
    if needle not in out:
        problems.append(f"the demo output lacks {needle!r}")
if "<html" not in html.lower() or "done" not in html:
    problems.append("the HTML status report is missing or empty")
# Progress over time: the demo runs several times, so the chart has a dot per run and step,
# and the page states the projection (or why there is none).
runs = set(re.findall(r'<circle [^>]*data-run="([^"]+)"', html))
if 'data-chart="progress"' not in html or len(runs) < 2:
    problems.append(f"the HTML report lacks the progress chart over several runs ({len(runs)} runs drawn)")
if 'id="projection"' not in html:
    problems.append("the HTML report lacks the projection")

if problems:
    print("demo check failed:")
    for p in problems:
        print("  -", p)
    sys.exit(1)
print(f"demo check: {len(eligible)} converted, {len(blocked)} blocked with their reasons, HTML report written")
