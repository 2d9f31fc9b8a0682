#!/usr/bin/env python3
"""Writes a Graph emulator tenant for the benchmark: cloud-only users that match the OpenLDAP
ou=Bulk accounts of `openldap-up.sh --bulk N` (uid bulkNNNNNN, otherMailbox
bulkNNNNNN@bulk-partner.example) by userPrincipalName = uid@bench.example.com.

Usage: tenant.py OUT.json CLIENT_ID CLIENT_SECRET --users N --width W
                 [--converted] [--serial M]

  --converted   the users are already converted: the external address in mail and otherMails,
                externalUserState Accepted (a no-change run has nothing to do for them)
  --serial M    M more unconverted cloud-only users serialNNNNNN@bench.example.com (no LDAP
                account) for the serial reference converter in scripts/bench/serial-convert.py
"""
import argparse
import json
import os
import uuid

DOMAIN = "bench.example.com"
EXTERNAL = "bulk-partner.example"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("client_id")
    p.add_argument("secret")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--width", type=int, default=6)
    p.add_argument("--converted", action="store_true")
    p.add_argument("--serial", type=int, default=0)
    a = p.parse_args()
    users = []
    for i in range(1, a.users + 1):
        uid = "bulk" + str(i).zfill(a.width)
        user = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "b2bsync-bench:" + uid)),
            "userPrincipalName": f"{uid}@{DOMAIN}",
            "displayName": f"Bulk User {str(i).zfill(a.width)}",
            "userType": "Member",
            "accountEnabled": True,
        }
        if a.converted:
            ext = f"{uid}@{EXTERNAL}"
            user.update({
                "mail": ext,
                "otherMails": [ext],
                "externalUserState": "Accepted",
                "externalUserStateChangeDateTime": "2026-01-05T10:00:00Z",
            })
        users.append(user)
    for i in range(1, a.serial + 1):
        name = "serial" + str(i).zfill(6)
        users.append({
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "b2bsync-bench:" + name)),
            "userPrincipalName": f"{name}@{DOMAIN}",
            "displayName": f"Serial User {i}",
            "userType": "Member",
            "accountEnabled": True,
        })
    tenant = {
        "tenantId": str(uuid.uuid5(uuid.NAMESPACE_URL, "b2bsync-bench-tenant")),
        "initialDomain": "benchexample.onmicrosoft.com",
        "verifiedDomains": [DOMAIN, "benchexample.onmicrosoft.com"],
        "apps": [{
            "appId": a.client_id,
            "displayName": "b2bsync bench",
            "clientSecrets": [a.secret],
            "permissions": ["User.ReadWrite.All", "User.Invite.All", "Organization.Read.All",
                            "RoleManagement.Read.Directory"],
        }],
        "users": users,
    }
    fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        # dumps, not dump: json.dump encodes in pure Python (minutes for 1,000,000 users)
        f.write(json.dumps(tenant))


if __name__ == "__main__":
    main()
