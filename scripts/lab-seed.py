#!/usr/bin/env python3
"""Turn tests/fixtures/partners.json into LDIF for the lab directories.

Python 3 standard library only.

  lab-seed.py ad-ldif   [--fixture F]             LDIF (ldapadd) for Samba AD: OUs, people, service account
  lab-seed.py ol-ldif   [--fixture F] [--bulk N]  LDIF (slapadd) for OpenLDAP: the whole tree, incl. N bulk entries
  lab-seed.py ds-ldif   [--fixture F]             LDIF (ldapadd) for 389 Directory Server: OUs, people, group, ACIs
  lab-seed.py accounts  [--fixture F]             JSON of every seeded account with its AD and OpenLDAP DNs

Passwords come from the environment: LAB_PARTNER_PASSWORD (people), LAB_SVC_PASSWORD (service account).
"""
import argparse
import base64
import hashlib
import json
import os
import sys

DEFAULT_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "partners.json")
PARTNER_PW = os.environ.get("LAB_PARTNER_PASSWORD", "Partner-Init-2026!")
SVC_PW = os.environ.get("LAB_SVC_PASSWORD", "Svc-B2b-2026!x")

UAC_NORMAL = 512          # NORMAL_ACCOUNT
UAC_DISABLED = 514        # NORMAL_ACCOUNT | ACCOUNTDISABLE
UAC_DONT_EXPIRE = 0x10000  # service account: password never expires


# ---------------------------------------------------------------- LDIF helpers
def _safe(value: str) -> bool:
    """RFC 2849 SAFE-STRING (ASCII only, no leading space/colon/less-than, no trailing space)."""
    if value == "":
        return True
    if value[0] in " :<" or value[-1] == " ":
        return False
    return all(0x01 <= ord(c) <= 0x7F and c not in "\r\n" for c in value)


def attr(name: str, value) -> str:
    if isinstance(value, bytes):
        return f"{name}:: {base64.b64encode(value).decode()}"
    value = str(value)
    if _safe(value):
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode('utf-8')).decode()}"


def rdn_escape(value: str) -> str:
    """RFC 4514 escaping of an attribute value in a DN."""
    out = []
    for i, c in enumerate(value):
        if c in ',+"\\<>;=' or (i == 0 and c in "# ") or (i == len(value) - 1 and c == " "):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def entry(dn: str, attrs) -> str:
    lines = [attr("dn", dn)]
    lines += [attr(k, v) for k, v in attrs]
    return "\n".join(lines) + "\n\n"


def ad_unicode_pwd(password: str) -> bytes:
    return f'"{password}"'.encode("utf-16-le")


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


# ---------------------------------------------------------------- model
def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ad_dn(fx, acct):
    c = fx["containers"][acct["container"]]["ad"]
    return f"CN={rdn_escape(acct['cn'])},{c},{fx['ad_base_dn']}"


def ol_dn(fx, acct):
    c = fx["containers"][acct["container"]]["ol"]
    return f"uid={rdn_escape(acct['sam'])},{c},{fx['ol_base_dn']}"


def svc_ad_dn(fx):
    s = fx["service_account"]
    return f"CN={rdn_escape(s['cn'])},{fx['containers'][s['ad_container']]['ad']},{fx['ad_base_dn']}"


# ---------------------------------------------------------------- AD
def ad_ldif(fx) -> str:
    out = []
    for key, c in fx["containers"].items():
        if c.get("create"):
            name = c["ad"].split("=", 1)[1]
            out.append(entry(f"{c['ad']},{fx['ad_base_dn']}",
                             [("objectClass", "organizationalUnit"), ("ou", name), ("description", c["description"])]))
    suffix = fx["upn_suffix"]
    for a in fx["accounts"]:
        attrs = [("objectClass", "user"), ("cn", a["cn"]), ("sAMAccountName", a["sam"]),
                 ("userPrincipalName", f"{a['sam']}@{suffix}"), ("givenName", a["given_name"]),
                 ("sn", a["sn"]), ("displayName", a["display_name"])]
        if a.get("external_mail"):
            attrs.append((fx["external_mail_attribute"], a["external_mail"]))
        if a.get("mail"):
            attrs.append(("mail", a["mail"]))
        if a.get("admin_count"):
            attrs.append(("adminCount", a["admin_count"]))
        attrs.append(("unicodePwd", ad_unicode_pwd(PARTNER_PW)))
        attrs.append(("userAccountControl", UAC_NORMAL if a.get("enabled", True) else UAC_DISABLED))
        out.append(entry(ad_dn(fx, a), attrs))
    s = fx["service_account"]
    out.append(entry(svc_ad_dn(fx), [
        ("objectClass", "user"), ("cn", s["cn"]), ("sAMAccountName", s["sam"]),
        ("userPrincipalName", f"{s['sam']}@{suffix}"), ("displayName", s["display_name"]),
        ("description", "b2bsync lab service account; delegated on " + fx["containers"][s["delegated_on"]]["ad"]),
        ("unicodePwd", ad_unicode_pwd(SVC_PW)), ("userAccountControl", UAC_NORMAL | UAC_DONT_EXPIRE)]))
    return "".join(out)


# ---------------------------------------------------------------- OpenLDAP and 389-ds
def ldap_person(fx, a):
    """The attributes a seeded person has in both generic LDAP servers (no password, no flags)."""
    attrs = [("objectClass", "inetOrgPerson"), ("objectClass", "extensibleObject"),
             ("uid", a["sam"]), ("cn", a["cn"]), ("givenName", a["given_name"]), ("sn", a["sn"]),
             ("displayName", a["display_name"])]
    if a.get("external_mail"):
        attrs.append((fx["external_mail_attribute"], a["external_mail"]))
    if a.get("mail"):
        attrs.append(("mail", a["mail"]))
    return attrs


def ldap_service(fx, password):
    s = fx["service_account"]
    return [("objectClass", "inetOrgPerson"), ("cn", s["cn"]), ("sn", s["cn"]), ("uid", s["sam"]),
            ("displayName", s["display_name"]), ("userPassword", password)]


def ol_ldif(fx, bulk: int) -> str:
    base = fx["ol_base_dn"]
    dc = base.split(",")[0].split("=", 1)[1]
    out = [entry(base, [("objectClass", "dcObject"), ("objectClass", "organization"), ("dc", dc), ("o", "b2bsync lab")])]

    def ou(name, desc):
        out.append(entry(f"ou={name},{base}", [("objectClass", "organizationalUnit"), ("ou", name), ("description", desc)]))

    ou("Service", "Service accounts")
    ou("Policies", "ppolicy policies")
    out.append(entry(f"cn=default,ou=Policies,{base}", [
        ("objectClass", "organizationalRole"), ("objectClass", "pwdPolicy"), ("cn", "default"),
        ("pwdAttribute", "userPassword"), ("pwdMinLength", 8), ("pwdCheckQuality", 1),
        ("pwdInHistory", 0), ("pwdLockout", "TRUE"), ("pwdMaxFailure", 0), ("pwdMustChange", "FALSE"),
        ("pwdAllowUserChange", "TRUE")]))
    for key, c in fx["containers"].items():
        name = c["ol"].split("=", 1)[1]
        ou(name, c["description"])
    s = fx["service_account"]
    out.append(entry(s["ol_dn"], ldap_service(fx, ssha(SVC_PW))))
    for a in fx["accounts"]:
        attrs = ldap_person(fx, a)
        if a.get("admin_count"):
            attrs.append(("adminCount", a["admin_count"]))
        enabled = a.get("enabled", True)
        attrs.append(("userAccountControl", UAC_NORMAL if enabled else UAC_DISABLED))
        attrs.append(("userPassword", ssha(PARTNER_PW)))
        if not enabled:
            # ppolicy: permanently locked, so a bind fails like a disabled AD account
            attrs.append(("pwdAccountLockedTime", "000001010000Z"))
        out.append(entry(ol_dn(fx, a), attrs))
    if bulk > 0:
        b = fx["bulk"]
        name = b["container_ol"].split("=", 1)[1]
        ou(name, "Generated bulk accounts")
        width = max(6, len(str(bulk)))
        # one salted hash reused: hashing 100k passwords would dominate the load time for no test value
        pw = ssha(PARTNER_PW)
        parent = f"{b['container_ol']},{base}"
        dom = b["external_domain"]
        pre = b["uid_prefix"]
        chunks = []
        for i in range(1, bulk + 1):
            n = str(i).zfill(width)
            uid = pre + n
            chunks.append(
                f"dn: uid={uid},{parent}\nobjectClass: inetOrgPerson\nobjectClass: extensibleObject\n"
                f"uid: {uid}\ncn: Bulk User {n}\ngivenName: Bulk\nsn: User{n}\ndisplayName: Bulk User {n}\n"
                f"otherMailbox: {uid}@{dom}\nuserAccountControl: 512\nuserPassword: {pw}\n\n")
        out.append("".join(chunks))
    return "".join(out)


# ---------------------------------------------------------------- 389 Directory Server
def ds_ldif(fx) -> str:
    """The same world as OpenLDAP's, in 389-ds's own terms: no `userAccountControl` or `adminCount`
    (its schema has neither), a locked partner has `nsAccountLock: true`, the protected partner is a
    member of a protected group (the MemberOf plugin stays off, as it is by default), and the service
    account gets read everywhere and write on `mail` and `userPassword` under ou=Partners by ACIs.
    The base entry exists already (dscreate makes it). Every entry has `nsUniqueId` (and `entryUUID`,
    from the entryuuid plugin, except the base entry, made before the plugin ran): no account here is
    without an anchor."""
    base = fx["ol_base_dn"]
    svc = fx["service_account"]["ol_dn"]
    # 389-ds's schema has no otherMailbox (RFC 1274): give it AD's semantics, as the OpenLDAP lab does.
    out = ["dn: cn=schema\nchangetype: modify\nadd: attributeTypes\nattributeTypes: ( 0.9.2342.19200300.100.1.22 "
           "NAME 'otherMailbox' DESC 'b2bsync lab: AD-like otherMailbox' EQUALITY caseIgnoreMatch "
           "SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 X-ORIGIN 'b2bsync lab' )\n\n"]

    def ou(name, desc):
        out.append(entry(f"ou={name},{base}", [("objectClass", "organizationalUnit"), ("ou", name), ("description", desc)]))

    ou("Service", "Service accounts")
    ou("Groups", "Groups")
    for key, c in fx["containers"].items():
        ou(c["ol"].split("=", 1)[1], c["description"])
    s = fx["service_account"]
    out.append(entry(svc, ldap_service(fx, SVC_PW)))
    protected = []
    for a in fx["accounts"]:
        attrs = ldap_person(fx, a)
        attrs.append(("userPassword", PARTNER_PW))
        if not a.get("enabled", True):
            attrs.append(("nsAccountLock", "true"))
        if a.get("admin_count"):
            protected.append(ol_dn(fx, a))
        out.append(entry(ol_dn(fx, a), attrs))
    group = [("objectClass", "groupOfNames"), ("cn", "Protected Partners"),
             ("description", "b2bsync lab: members are never touched (stands for AD's adminCount)")]
    group += [("member", dn) for dn in protected]
    out.append(entry(f"cn=Protected Partners,ou=Groups,{base}", group))
    # ACIs: modify records on existing entries.
    # every attribute but the password hashes, operational ones included (nsAccountLock, nsUniqueId, ...)
    read = (f'(targetattr!="userPassword")(version 3.0; acl "b2bsync service account reads"; '
            f'allow (read, search, compare) userdn="ldap:///{svc}";)')
    write = (f'(targetattr="mail || userPassword")(version 3.0; acl "b2bsync service account writes mail and '
             f'resets passwords"; allow (write) userdn="ldap:///{svc}";)')
    for dn, aci in [(base, read), (f"{fx['containers']['partners']['ol']},{base}", write)]:
        out.append(f"dn: {dn}\nchangetype: modify\nadd: aci\naci: {aci}\n\n")
    return "".join(out)


def accounts_json(fx) -> str:
    rows = []
    for a in fx["accounts"]:
        r = dict(a)
        r["ad_dn"] = ad_dn(fx, a)
        r["ol_dn"] = ol_dn(fx, a)
        r["upn"] = f"{a['sam']}@{fx['upn_suffix']}"
        rows.append(r)
    s = fx["service_account"]
    svc = {"sam": s["sam"], "ad_dn": svc_ad_dn(fx), "ol_dn": s["ol_dn"], "upn": f"{s['sam']}@{fx['upn_suffix']}"}
    return json.dumps({"accounts": rows, "service_account": svc}, ensure_ascii=False, indent=2) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["ad-ldif", "ol-ldif", "ds-ldif", "accounts"])
    p.add_argument("--fixture", default=DEFAULT_FIXTURE)
    p.add_argument("--bulk", type=int, default=0, help="ol-ldif only: number of generated ou=Bulk entries")
    args = p.parse_args(argv)
    if args.bulk < 0:
        p.error("--bulk must be >= 0")
    fx = load(args.fixture)
    out = sys.stdout
    if args.mode == "ad-ldif":
        out.write(ad_ldif(fx))
    elif args.mode == "ol-ldif":
        out.write(ol_ldif(fx, args.bulk))
    elif args.mode == "ds-ldif":
        out.write(ds_ldif(fx))
    else:
        out.write(accounts_json(fx))


if __name__ == "__main__":
    main()
