//! Which Microsoft Graph application permissions b2bsync needs, and which of them a token's
//! roles lack. Pure: `check` reads the roles from the token (`GraphClient::token_roles`) and
//! asks here; nothing is called.

/// The permissions `roles` (a token's `roles` claim) lack for a run, by the name an admin
/// grants. `verified_domains_configured`: `[graph] verified_domains` is set, so the tenant's
/// domains need not be read. `revoke_sessions`: `[policy] revoke_sessions` is on, so sign-in
/// sessions are revoked after the randomization. `sign_in_activity`: `[policy]
/// randomize_password = "after_sign_in"`, so the users' `signInActivity` is read.
pub fn missing(
    roles: &[String],
    verified_domains_configured: bool,
    revoke_sessions: bool,
    sign_in_activity: bool,
) -> Vec<&'static str> {
    let has = |r: &str| roles.iter().any(|x| x == r);
    let directory_read = has("Directory.Read.All") || has("Directory.ReadWrite.All");
    let read = has("User.Read.All") || has("User.ReadWrite.All") || directory_read;
    let write = has("User.ReadWrite.All") || has("Directory.ReadWrite.All");
    let invite = has("User.Invite.All") || write;
    let role_read = has("RoleManagement.Read.Directory")
        || has("RoleManagement.ReadWrite.Directory")
        || directory_read;
    let org_read = verified_domains_configured
        || has("Organization.Read.All")
        || has("Organization.ReadWrite.All")
        || directory_read;
    let revoke = !revoke_sessions || has("User.RevokeSessions.All") || write;
    let audit = !sign_in_activity || has("AuditLog.Read.All");
    let mut missing = Vec::new();
    if !(read && write) {
        missing.push("User.ReadWrite.All");
    }
    if !revoke {
        missing.push("User.RevokeSessions.All (or set [policy] revoke_sessions = false)");
    }
    if !audit {
        missing.push("AuditLog.Read.All (for [policy] randomize_password = \"after_sign_in\")");
    }
    if !invite {
        missing.push("User.Invite.All");
    }
    if !role_read {
        missing.push("RoleManagement.Read.Directory");
    }
    if !org_read {
        missing.push("Organization.Read.All (or set [graph] verified_domains)");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_need_is_met_by_its_own_permission_or_a_broader_one() {
        let user = "User.ReadWrite.All";
        let invite = "User.Invite.All";
        let roles = "RoleManagement.Read.Directory";
        let org = "Organization.Read.All (or set [graph] verified_domains)";
        let cases: [(&[&str], bool, &[&str]); 7] = [
            (&[], false, &[user, invite, roles, org]),
            (&[], true, &[user, invite, roles]),
            (
                &["User.ReadWrite.All", "RoleManagement.Read.Directory"],
                false,
                &[org],
            ),
            (
                &[
                    "User.ReadWrite.All",
                    "RoleManagement.Read.Directory",
                    "Organization.Read.All",
                ],
                false,
                &[],
            ),
            (&["Directory.ReadWrite.All"], false, &[]),
            (&["Directory.Read.All", "User.Invite.All"], false, &[user]),
            (&["User.Read.All"], true, &[user, invite, roles]),
        ];
        for (granted, configured, lacking) in cases {
            let granted: Vec<String> = granted.iter().map(|r| r.to_string()).collect();
            assert_eq!(
                missing(&granted, configured, false, false),
                lacking,
                "{granted:?}"
            );
        }
    }

    #[test]
    fn revoking_sessions_needs_its_permission_or_a_user_write_one_when_the_policy_is_on() {
        let revoke = "User.RevokeSessions.All (or set [policy] revoke_sessions = false)";
        let others = ["User.Invite.All", "RoleManagement.Read.Directory"];
        let roles = |names: &[&str]| -> Vec<String> {
            names.iter().chain(&others).map(|r| r.to_string()).collect()
        };
        let read = roles(&["User.Read.All"]);
        assert!(missing(&read, true, true, false).contains(&revoke));
        assert!(!missing(&read, true, false, false).contains(&revoke));
        let narrow = roles(&["User.Read.All", "User.RevokeSessions.All"]);
        assert!(!missing(&narrow, true, true, false).contains(&revoke));
        for broad in ["User.ReadWrite.All", "Directory.ReadWrite.All"] {
            assert_eq!(
                missing(&roles(&[broad]), true, true, false),
                Vec::<&str>::new()
            );
        }
    }

    #[test]
    fn after_sign_in_needs_audit_log_read_all_and_nothing_broader_stands_in() {
        let full: Vec<String> = ["Directory.ReadWrite.All", "User.RevokeSessions.All"]
            .iter()
            .map(|r| r.to_string())
            .collect();
        let lacking = missing(&full, true, true, true);
        assert_eq!(lacking.len(), 1, "{lacking:?}");
        assert!(lacking[0].starts_with("AuditLog.Read.All"), "{lacking:?}");
        assert!(missing(&full, true, true, false).is_empty());
        let mut granted = full.clone();
        granted.push("AuditLog.Read.All".into());
        assert!(missing(&granted, true, true, true).is_empty());
    }
}
