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

# explain: a blocked and a converted partner, each in its own section of the output.
def section(title):
    at = out.find(title)
    if at < 0:
        problems.append(f"the demo output lacks the section {title!r}")
        return ""
    end = out.find("== ", at + len(title))
    return out[at:end if end > 0 else len(out)]
blocked_x = section("Explain a blocked partner")
for needle in ["account:    p.baker@", "state:      blocked",
               "reason:     on_premises_user_principal_name", "help:       ", "next step:  "]:
    if blocked_x and needle not in blocked_x:
        problems.append(f"explain p.baker lacks {needle!r}")
done_x = section("Explain a converted partner")
for needle in ["account:    p.adams@", "state:      done", "kind:       synced",
               "set_directory_mail done", "invite done", "randomize_password done", "request-id "]:
    if done_x and needle not in done_x:
        problems.append(f"explain p.adams lacks {needle!r}")
# The per-account section of the HTML page: one row per partner, named by UPN, with its state.
rows = {}
for m in re.finditer(r'<tr data-account="[^"]*"><td><span data-field="name">([^<]*)</span>.*?'
                     r'data-field="state">([^<]*)<.*?</tr>', html):
    rows[m.group(1).split("@")[0]] = m.group(2)
if 'id="accounts"' not in html:
    problems.append("the HTML report lacks the per-account section")
for sam in eligible:
    if rows.get(sam) != "done":
        problems.append(f"the HTML per-account section shows {sam} as {rows.get(sam)!r}, not done")
for sam in [s for s in blocked if s in rows]:
    if rows[sam] != "blocked":
        problems.append(f"the HTML per-account section shows {sam} as {rows[sam]!r}, not blocked")
if 'data-about="tenant"' not in html:
    problems.append("the HTML report does not name its tenant")

if problems:
    print("demo check failed:")
    for p in problems:
        print("  -", p)
    sys.exit(1)
print(f"demo check: {len(eligible)} converted, {len(blocked)} blocked with their reasons, explain shown for a blocked and a converted partner, HTML report with {len(rows)} account rows written")
