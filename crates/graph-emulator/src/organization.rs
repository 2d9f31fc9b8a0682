//! `/v1.0/organization` (the tenant's verified domains) and `/v1.0/directoryRoles` with their
//! `members`: what a connector reads to learn which addresses are internal and which users
//! hold admin roles. Roles come from the fixture's private `roles` of each user; only roles
//! somebody holds are listed, as Graph lists only activated roles.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::directory::lock;
use super::http::{graph_error, odata};
use super::request::Call;
use super::users::denied;

/// `GET /organization`: Organization.Read.All is the least privileged application permission.
const READ_ORGANIZATION: &[&str] = &[
    "Organization.Read.All",
    "Organization.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

/// `GET /policies/authorizationPolicy`: Policy.Read.All is the least privileged application
/// permission, Policy.ReadWrite.Authorization the higher one (contract §1.7).
const READ_AUTHORIZATION_POLICY: &[&str] = &["Policy.Read.All", "Policy.ReadWrite.Authorization"];

/// The values of `allowInvitesFrom`, most restrictive first.
pub(crate) const ALLOW_INVITES_FROM: [&str; 4] = [
    "none",
    "adminsAndGuestInviters",
    "adminsGuestInvitersAndAllMembers",
    "everyone",
];

/// `GET /directoryRoles` and `/members`: RoleManagement.Read.Directory is the least privileged.
const READ_ROLES: &[&str] = &[
    "RoleManagement.Read.Directory",
    "RoleManagement.ReadWrite.Directory",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

/// Keeps `id` plus the `$select`ed properties of `object`, or all of them without `$select`.
fn select(call: &Call<'_>, object: Map<String, Value>) -> Map<String, Value> {
    let Some(list) = call.query.get("select") else {
        return object;
    };
    let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
    object
        .into_iter()
        .filter(|(k, _)| k == "id" || wanted.iter().any(|w| w.eq_ignore_ascii_case(k)))
        .collect()
}

/// `GET /v1.0/organization`.
pub(crate) fn organization(call: &Call<'_>) -> Response {
    if !call.principal.has_any(READ_ORGANIZATION) {
        return denied(call.ctx);
    }
    let emu = call.emu;
    let domains: Vec<Value> = emu
        .verified_domains
        .iter()
        .chain(std::iter::once(&emu.initial_domain))
        .fold(Vec::<&String>::new(), |mut acc, d| {
            if !acc.iter().any(|x| x.eq_ignore_ascii_case(d)) {
                acc.push(d);
            }
            acc
        })
        .into_iter()
        .map(|name| {
            let initial = name.eq_ignore_ascii_case(&emu.initial_domain);
            json!({
                "capabilities": "Email, OfficeCommunicationsOnline",
                "isDefault": emu.verified_domains.first().is_some_and(|d| d == name),
                "isInitial": initial,
                "name": name,
                "type": "Managed",
            })
        })
        .collect();
    let org = json!({
        "id": emu.tenant_id,
        "displayName": emu.initial_domain.split('.').next().unwrap_or_default(),
        "verifiedDomains": domains,
    });
    let Value::Object(org) = org else {
        return denied(call.ctx);
    };
    odata(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/v1.0/$metadata#organization", emu.base_url),
            "value": [Value::Object(select(call, org))],
        }),
    )
}

/// The activated roles: display name → holders' ids, with a stable id per role name.
fn roles(call: &Call<'_>) -> BTreeMap<String, (String, Vec<String>)> {
    let dir = lock(&call.emu.dir);
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for entry in &dir.entries {
        for role in &entry.user.roles {
            let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, role.as_bytes()).to_string();
            out.entry(role.clone())
                .or_insert_with(|| (id, Vec::new()))
                .1
                .push(entry.user.id.clone());
        }
    }
    out
}

/// `GET /v1.0/policies/authorizationPolicy`: the tenant's singleton, with the
/// `allowInvitesFrom` set by `--allow-invites-from` or the control API (default `everyone`).
pub(crate) fn authorization_policy(call: &Call<'_>) -> Response {
    if !call.principal.has_any(READ_AUTHORIZATION_POLICY) {
        return denied(call.ctx);
    }
    let allow = lock(&call.emu.allow_invites_from).clone();
    let policy = json!({
        "id": "authorizationPolicy",
        "displayName": "Authorization Policy",
        "description": "Used to manage authorization related settings across the company.",
        "allowInvitesFrom": allow,
        "allowedToSignUpEmailBasedSubscriptions": true,
        "allowedToUseSSPR": true,
        "allowEmailVerifiedUsersToJoinOrganization": false,
        "blockMsolPowerShell": false,
        "guestUserRoleId": "10dae51f-b6af-4016-8d66-8c2a99b929b3",
    });
    let Value::Object(policy) = policy else {
        return denied(call.ctx);
    };
    let mut body = select(call, policy);
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/v1.0/$metadata#policies/authorizationPolicy/$entity",
            call.emu.base_url
        )),
    );
    odata(StatusCode::OK, &Value::Object(body))
}

/// `GET /v1.0/directoryRoles`.
pub(crate) fn directory_roles(call: &Call<'_>) -> Response {
    if !call.principal.has_any(READ_ROLES) {
        return denied(call.ctx);
    }
    let value: Vec<Value> = roles(call)
        .into_iter()
        .filter_map(|(name, (id, _))| {
            match json!({
                "id": id,
                "displayName": name,
                "description": format!("{name} role"),
                "roleTemplateId": id,
            }) {
                Value::Object(m) => Some(Value::Object(select(call, m))),
                _ => None,
            }
        })
        .collect();
    odata(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/v1.0/$metadata#directoryRoles", call.emu.base_url),
            "value": value,
        }),
    )
}

/// `GET /v1.0/directoryRoles/{id}/members`.
pub(crate) fn role_members(call: &Call<'_>, role_id: &str) -> Response {
    if !call.principal.has_any(READ_ROLES) {
        return denied(call.ctx);
    }
    let Some((_, (_, holders))) = roles(call)
        .into_iter()
        .find(|(_, (id, _))| id.eq_ignore_ascii_case(role_id))
    else {
        return graph_error(
            call.ctx,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{role_id}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    };
    let value: Vec<Value> = holders
        .into_iter()
        .map(|id| json!({ "@odata.type": "#microsoft.graph.user", "id": id }))
        .collect();
    odata(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/v1.0/$metadata#directoryObjects", call.emu.base_url),
            "value": value,
        }),
    )
}
