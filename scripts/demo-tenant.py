#!/usr/bin/env python3
"""Writes the Graph emulator's tenant for the demo: one cloud user per partner of the lab AD,
joined the way Entra Connect would join them (onPremisesImmutableId = base64(objectGUID)).

Usage: demo-tenant.py OUT.json CLIENT_ID CLIENT_SECRET
Reads the AD over LDAPS with ldapsearch, using the variables of $LAB/lab.env.

Who is what in the demo tenant:
  synced (Entra Connect):  every partner except the cloud-only ones below
  cloud-only:              p.chen (converts), p.evans (has an Exchange mailbox: blocked)
  synced, blocked:         p.baker (Entra Connect wrote onPremisesUserPrincipalName)
"""
import base64
import json
import os
import subprocess
import sys
import uuid

CLOUD_ONLY = {"p.chen", "p.evans"}
MAILBOX = {"p.evans"}
ON_PREM_UPN = {"p.baker"}


def ldif_entries(text):
    """Parses ldapsearch -LLL output (with folded lines and base64 values)."""
    entries, current, last = [], {}, None
    for line in text.splitlines():
        if line.startswith(" ") and last is not None:
            current[last][-1] += line[1:]
            continue
        if not line.strip():
            if current:
                entries.append(current)
            current, last = {}, None
            continue
        name, _, value = line.partition(":")
        if value.startswith(":"):
            value = "b64:" + value[1:].strip()
        else:
            value = value.strip()
        current.setdefault(name, []).append(value)
        last = name
    if current:
        entries.append(current)
    return entries


def text_value(v):
    if v.startswith("b64:"):
        return base64.b64decode(v[4:]).decode("utf-8")
    return v


def main():
    out, client_id, secret = sys.argv[1:4]
    env = dict(os.environ, LDAPTLS_CACERT=os.environ["LAB_CA"])
    result = subprocess.run(
        ["ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-H", os.environ["AD_LDAPS_URL"],
         "-D", os.environ["AD_ADMIN_BIND"], "-w", os.environ["AD_ADMIN_PASSWORD"],
         "-b", os.environ["AD_PARTNERS_DN"], "(&(objectCategory=person)(objectClass=user))",
         "sAMAccountName", "objectGUID", "userPrincipalName", "displayName"],
        env=env, check=True, capture_output=True, text=True)
    users = []
    for e in ldif_entries(result.stdout):
        if "sAMAccountName" not in e:
            continue
        sam = text_value(e["sAMAccountName"][0])
        guid = e["objectGUID"][0]
        assert guid.startswith("b64:"), guid
        upn = text_value(e.get("userPrincipalName", [f"b64:{base64.b64encode((sam + '@lab.example.com').encode()).decode()}"])[0])
        display = text_value(e.get("displayName", ["b64:" + base64.b64encode(sam.encode()).decode()])[0])
        synced = sam not in CLOUD_ONLY
        user = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "b2bsync-demo:" + sam)),
            "userPrincipalName": upn,
            "displayName": display,
            "userType": "Member",
            "accountEnabled": True,
            "mailbox": sam in MAILBOX,
        }
        if synced:
            user.update({
                "onPremisesSyncEnabled": True,
                "onPremisesImmutableId": guid[4:],
                "onPremisesSamAccountName": sam,
            })
            if sam in ON_PREM_UPN:
                user["onPremisesUserPrincipalName"] = upn
        users.append(user)
    tenant = {
        "tenantId": str(uuid.uuid5(uuid.NAMESPACE_URL, "b2bsync-demo-tenant")),
        "initialDomain": "labexample.onmicrosoft.com",
        "verifiedDomains": ["lab.example.com", "labexample.onmicrosoft.com"],
        "apps": [{
            "appId": client_id,
            "displayName": "b2bsync demo",
            "clientSecrets": [secret],
            "permissions": ["User.ReadWrite.All", "User.Invite.All", "Organization.Read.All", "RoleManagement.Read.Directory"],
        }],
        "users": sorted(users, key=lambda u: u["userPrincipalName"]),
    }
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(tenant, f, indent=2, ensure_ascii=False)
    print(f"demo: tenant {tenant['tenantId']} with {len(users)} users written to {out}")


if __name__ == "__main__":
    main()
