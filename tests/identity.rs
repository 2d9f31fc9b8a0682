//! Graph credentials without a stored secret, end to end through the binary: a workload
//! identity (a federated token file, as AKS projects it) and a managed identity endpoint
//! (as Azure IMDS serves it), each getting a token from the emulator and reading Graph.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::world::{Partner, Tenancy, World, text, world_with};
use graph_emulator::FederatedCredential;

fn partners() -> Vec<Partner> {
    vec![Partner::new(
        "adams",
        "Ana Adams",
        Some("ana@fabrikam.example"),
        Tenancy::Synced,
    )]
}

fn set_auth(w: &World, lines: &str) {
    let path = w.config_path();
    let config = std::fs::read_to_string(&path).unwrap();
    let replaced = config.replace(
        "auth = \"client_secret\"\nclient_secret_env = \"WORLD_GRAPH_SECRET\"",
        lines,
    );
    assert_ne!(config, replaced, "the auth lines were not found");
    std::fs::write(&path, replaced).unwrap();
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn workload_identity_signs_in_with_a_federated_token_file() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("issuer.key");
    std::fs::write(&key, openssl(&["genrsa", "2048"])).unwrap();
    let public =
        String::from_utf8(openssl(&["rsa", "-in", key.to_str().unwrap(), "-pubout"])).unwrap();
    let issuer = "https://oidc.aks.example/cluster-1/";
    let subject = "system:serviceaccount:b2bsync:b2bsync";
    let w = world_with(&partners(), "", |o| {
        o.tenant.apps[0]
            .federated_credentials
            .push(FederatedCredential {
                issuer: issuer.into(),
                subject: subject.into(),
                audiences: vec!["api://AzureADTokenExchange".into()],
                public_key_pem: public.clone(),
            });
    })
    .await;
    // The token the kubelet would project into the pod.
    let now = jiff::Timestamp::now().as_second();
    let claims = serde_json::json!({
        "iss": issuer, "sub": subject, "aud": ["api://AzureADTokenExchange"],
        "iat": now, "nbf": now, "exp": now + 3600,
    });
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&key).unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("cluster-1-key".into());
    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    let token_file = w.dir.path().join("azure-identity-token");
    std::fs::write(&token_file, &token).unwrap();
    set_auth(
        &w,
        &format!(
            "auth = \"workload_identity\"\nfederated_token_file = \"{}\"",
            token_file.display()
        ),
    );

    let out = w.b2bsync(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        w.ad_mail("adams").await.as_deref(),
        Some("ana@fabrikam.example")
    );

    // A token for another subject is refused with Entra's error and a help line.
    let claims = serde_json::json!({
        "iss": issuer, "sub": "system:serviceaccount:other:other", "aud": ["api://AzureADTokenExchange"],
        "iat": now, "nbf": now, "exp": now + 3600,
    });
    std::fs::write(
        &token_file,
        jsonwebtoken::encode(&header, &claims, &encoding).unwrap(),
    )
    .unwrap();
    let out = w.b2bsync(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AADSTS70021") && stderr.contains("help:"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&token),
        "the federated token must not be echoed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_identity_gets_its_token_from_the_host_endpoint() {
    let w = world_with(&partners(), "", |o| {
        o.tenant.apps[0].managed_identity = true
    })
    .await;
    set_auth(
        &w,
        &format!(
            "auth = \"managed_identity\"\nmanaged_identity_endpoint = \"{}/metadata/identity/oauth2/token\"",
            w.emulator.base_url
        ),
    );
    let out = w.b2bsync(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = w.b2bsync(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        w.ad_mail("adams").await.as_deref(),
        Some("ana@fabrikam.example")
    );

    // A user-assigned identity that is not on this host: a clear error.
    let path = w.config_path();
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, config.replace("auth = \"managed_identity\"", "auth = \"managed_identity\"\nmanaged_identity_client_id = \"00000000-0000-0000-0000-000000000000\"")).unwrap();
    let out = w.b2bsync(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Identity not found"),
        "{}",
        text(&out)
    );
}
