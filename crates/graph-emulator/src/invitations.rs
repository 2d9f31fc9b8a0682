//! `POST /v1.0/invitations` (contract §1): new guest invitations, conversion of an existing
//! internal user through `invitedUser.id`, `resetRedemption`, the email character rules and
//! the conversion blockers P1–P6 and P8. Each accepted invitation is recorded.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::auth::{INVITE, WRITE_USERS};
use super::directory::{Entry, InvitationRecord, lock, now_graph, proxy_address};
use super::http::{LogExtra, graph_error, odata};
use super::request::{Call, percent_encode};
use super::tenant::{ObjectIdentity, User};
use super::users::{denied, not_found};

/// Characters the invited email address may not contain (contract §1.2).
const FORBIDDEN: &str = "~!#$%^&*()+=[]{}\\/|;:\"<>?,";

/// Checks the email character rules; returns (local part, domain).
pub(crate) fn check_email(address: &str) -> Option<(String, String)> {
    let (local, domain) = address.rsplit_once('@')?;
    let bad_edge = |s: &str| s.starts_with(['.', '-']) || s.ends_with(['.', '-']);
    if local.is_empty()
        || domain.is_empty()
        || local
            .chars()
            .any(|c| FORBIDDEN.contains(c) || c.is_whitespace() || c == '@')
        || domain
            .chars()
            .any(|c| FORBIDDEN.contains(c) || c.is_whitespace())
        || bad_edge(local)
        || bad_edge(domain)
        || !domain.contains('.')
    {
        return None;
    }
    Some((local.to_owned(), domain.to_owned()))
}

fn text<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

/// POST `/invitations`.
pub(crate) fn invite(call: &Call<'_>) -> Response {
    let ctx = call.ctx;
    let bad = |message: &str| graph_error(ctx, StatusCode::BAD_REQUEST, "BadRequest", message);
    if !call.principal.has_any(INVITE) {
        return denied(ctx);
    }
    let body: Map<String, Value> = match serde_json::from_slice(call.body) {
        Ok(Value::Object(map)) => map,
        _ => return bad("Empty Payload. JSON content expected."),
    };
    let Some(email) = text(&body, "invitedUserEmailAddress")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return bad("The invitedUserEmailAddress property is required.");
    };
    let email = email.to_owned();
    let Some(redirect) = text(&body, "inviteRedirectUrl").filter(|s| !s.is_empty()) else {
        return bad("The inviteRedirectUrl property is required.");
    };
    let redirect = redirect.to_owned();
    let Some((local, domain)) = check_email(&email) else {
        return bad(&format!(
            "The invited user email address '{email}' is invalid."
        ));
    };
    let message_info = body
        .get("invitedUserMessageInfo")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let cc = message_info
        .get("ccRecipients")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if cc.len() > 1 {
        return bad("Currently only 1 additional recipient is supported.");
    }
    let reset = body
        .get("resetRedemption")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let invited_id = body
        .get("invitedUser")
        .and_then(Value::as_object)
        .and_then(|u| u.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let user_type = text(&body, "invitedUserType").unwrap_or("Guest").to_owned();
    let display_name = text(&body, "invitedUserDisplayName").map(str::to_owned);
    let send_message = body
        .get("sendInvitationMessage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if reset && invited_id.is_none() {
        return bad("When resetRedemption is true, the invitedUser/id relationship is required.");
    }
    if reset && !call.principal.has_any(WRITE_USERS) {
        return denied(ctx);
    }
    let emu = call.emu;
    let now = now_graph();
    let new_guest = new_guest_fault(emu) && invited_id.is_some();
    let guest = || {
        new_guest_user(
            emu,
            &email,
            &local,
            &domain,
            display_name.as_deref(),
            &user_type,
            &now,
        )
    };
    let mut dir = lock(&emu.dir);
    let (index, conversion) = match &invited_id {
        Some(_) if new_guest => {
            // Hostile fault: the id is treated as dropped, and the address held by the
            // requested user does not stop a new guest (as it would in Graph, P6).
            dir.entries.push(Entry::new(guest()));
            (dir.entries.len() - 1, false)
        }
        Some(id) => {
            let Some(index) = dir.find(id) else {
                return not_found(ctx, id);
            };
            let user = &dir.entries[index].user;
            // P5: role holders cannot be converted or reset with an app-only token [A].
            if !user.roles.is_empty() {
                return denied(ctx);
            }
            if !reset {
                // P1: Entra Connect's onPremisesUserPrincipalName blocks conversion.
                if user.on_premises_user_principal_name.is_some() {
                    return bad(
                        "Invalid request input. Internal-to-external conversion is blocked for users with onPremisesUserPrincipalName set; change the sync rule so the attribute is not written.",
                    );
                }
                if user.external_user_state.as_deref() == Some("Accepted") {
                    return bad(
                        "The user has already redeemed an invitation. Use resetRedemption to invite the user again.",
                    );
                }
            }
            // P4: no Exchange mailbox.
            if user.mailbox {
                return bad(
                    "B2B users having a mailbox is not supported. Remove the user's mailbox before converting the user to B2B collaboration.",
                );
            }
            // P3: the external address must not be in a verified domain.
            if emu.is_verified_domain(&domain) {
                return bad(
                    "User's email address cannot be in a verified domain. Please change the user's email to enable conversion to a B2B user.",
                );
            }
            // P2: the address must already be in mail (synced) or mail/otherMails (cloud-only).
            let in_mail = user
                .mail
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(&email));
            let in_other = user
                .other_mails
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&email));
            let synced = user.on_premises_sync_enabled == Some(true);
            let present = if synced && !reset {
                in_mail
            } else {
                in_mail || in_other
            };
            if !present {
                let field = if synced && !reset {
                    "mail"
                } else {
                    "mail or otherMails"
                };
                return bad(&format!(
                    "The invited user email address must match the user's {field} property before the user can be invited."
                ));
            }
            // P8: no other object may hold the address in proxyAddresses.
            if let Some(owner) = dir.proxy_owner(&email, Some(index)) {
                return bad(&format!(
                    "The invited email address is already in use in the proxyAddresses of object '{}'. Remove the address from that object first.",
                    dir.entries[owner].user.id
                ));
            }
            (index, true)
        }
        None => {
            // P6: an existing account with this address.
            let existing = dir.first_with(&email, |_, e| {
                let u = &e.user;
                u.mail
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(&email))
                    || u.user_principal_name.eq_ignore_ascii_case(&email)
                    || u.other_mails.iter().any(|m| m.eq_ignore_ascii_case(&email))
                    || u.proxy_addresses
                        .iter()
                        .any(|p| proxy_address(p).is_some_and(|a| a.eq_ignore_ascii_case(&email)))
            });
            if existing.is_none() && emu.is_verified_domain(&domain) {
                // [A] Guests come from outside: a verified domain's address is an internal one.
                return bad(&format!(
                    "The invited user email address '{email}' is in a verified domain of this tenant. Guest invitations are for external addresses."
                ));
            }
            match existing {
                Some(i) if dir.entries[i].user.creation_type.as_deref() == Some("Invitation") => {
                    (i, false)
                }
                Some(i) => {
                    return bad(&format!(
                        "The invited user already exists in the directory as objectID: {}. They can use that account to sign in to shared apps and resources.",
                        dir.entries[i].user.id
                    ));
                }
                None => {
                    dir.entries.push(Entry::new(guest()));
                    (dir.entries.len() - 1, false)
                }
            }
        }
    };
    {
        let user = &mut dir.entries[index].user;
        user.external_user_state = Some("PendingAcceptance".to_owned());
        user.external_user_state_change_date_time = Some(now.clone());
    }
    dir.touch(index);
    let delay = *lock(&emu.replication_delay);
    if !delay.is_zero() {
        dir.entries[index].writable_after = Some(std::time::Instant::now() + delay);
    }
    let user_id = dir.entries[index].user.id.clone();
    let upn = dir.entries[index].user.user_principal_name.clone();
    let ticket = percent_encode(&base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        uuid::Uuid::new_v4().as_bytes(),
    ));
    let inner = format!(
        "https://invitations.microsoft.com/redeem/?tenant={}&user={}&ticket={}&ver=2.0",
        emu.tenant_id, user_id, ticket
    );
    let redeem_url = format!(
        "https://login.microsoftonline.com/redeem?rd={}",
        lowercase_escapes(&percent_encode(&inner))
    );
    let invitation_id = uuid::Uuid::new_v4().to_string();
    dir.invitations.push(InvitationRecord {
        id: invitation_id.clone(),
        time: now,
        app_id: call.principal.app_id.clone(),
        invited_user_id: user_id.clone(),
        invited_user_email_address: email.clone(),
        reset_redemption: reset,
        conversion,
        invite_redirect_url: redirect.clone(),
        send_invitation_message: send_message,
        invite_redeem_url: redeem_url.clone(),
    });
    drop(dir);

    let cc_out = if cc.is_empty() {
        json!([{"emailAddress": {"name": null, "address": null}}])
    } else {
        Value::Array(
            cc.iter()
                .map(|r| {
                    let address = r
                        .pointer("/emailAddress/address")
                        .cloned()
                        .unwrap_or(Value::Null);
                    let name = r
                        .pointer("/emailAddress/name")
                        .cloned()
                        .unwrap_or(Value::Null);
                    json!({"emailAddress": {"name": name, "address": address}})
                })
                .collect(),
        )
    };
    let body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#invitations/$entity", emu.base_url),
        "id": invitation_id,
        "inviteRedeemUrl": redeem_url,
        "invitedUserDisplayName": display_name,
        "invitedUserType": user_type,
        "invitedUserEmailAddress": email,
        "sendInvitationMessage": send_message,
        "resetRedemption": reset,
        "inviteRedirectUrl": redirect,
        "status": "PendingAcceptance",
        "invitedUserMessageInfo": {
            "messageLanguage": message_info.get("messageLanguage").cloned().unwrap_or(Value::Null),
            "customizedMessageBody": message_info.get("customizedMessageBody").cloned().unwrap_or(Value::Null),
            "ccRecipients": cc_out,
        },
        "invitedUser": {"id": user_id, "userPrincipalName": upn},
    });
    let mut response = odata(StatusCode::CREATED, &body);
    response.extensions_mut().insert(LogExtra {
        app_id: Some(call.principal.app_id.clone()),
        invited_user_id: invited_id.or(Some(user_id)),
        invited_user_email_address: Some(email),
    });
    response
}

/// Whether the `invitationNewGuest` fault applies to `/invitations` now.
fn new_guest_fault(emu: &super::directory::Emulator) -> bool {
    lock(&emu.faults).as_ref().is_some_and(|f| {
        f.invitation_new_guest
            && f.path_prefix
                .as_deref()
                .is_none_or(|p| "/v1.0/invitations".starts_with(p))
    })
}

/// A new guest for `email`, as an invitation without `invitedUser.id` creates it.
fn new_guest_user(
    emu: &super::directory::Emulator,
    email: &str,
    local: &str,
    domain: &str,
    display_name: Option<&str>,
    user_type: &str,
    now: &str,
) -> User {
    let upn = format!("{local}_{domain}#EXT#@{}", emu.initial_domain);
    User {
        id: uuid::Uuid::new_v4().to_string(),
        user_principal_name: upn.clone(),
        display_name: Some(display_name.unwrap_or(local).to_owned()),
        mail: Some(email.to_owned()),
        mail_nickname: Some(format!("{local}_{domain}#EXT#")),
        other_mails: vec![email.to_owned()],
        proxy_addresses: vec![format!("SMTP:{email}")],
        user_type: Some(user_type.to_owned()),
        account_enabled: Some(true),
        created_date_time: Some(now.to_owned()),
        creation_type: Some("Invitation".to_owned()),
        identities: vec![ObjectIdentity {
            sign_in_type: Some("userPrincipalName".to_owned()),
            issuer: Some(emu.initial_domain.clone()),
            issuer_assigned_id: Some(upn),
        }],
        ..User::default()
    }
}

/// Entra writes escapes in lowercase (`%3a%2f%2f`).
fn lowercase_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::check_email;

    #[test]
    fn email_rules_follow_the_contract() {
        assert!(check_email("a.b-c_d@fabrikam.com").is_some());
        assert!(check_email(".ab@fabrikam.com").is_none());
        assert!(check_email("ab-@fabrikam.com").is_none());
        assert!(check_email("a+b@fabrikam.com").is_none());
        assert!(check_email("a#b@fabrikam.com").is_none());
        assert!(check_email("nodomain").is_none());
    }
}
