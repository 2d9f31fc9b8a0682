//! A certificate registered on an app of the tenant: its thumbprints (SHA-1 as `x5t`, SHA-256
//! as `x5t#S256`) and public key. The tenant fixture is checked with it when it is loaded, and
//! the token endpoint finds the key a client assertion names with it. It imports nothing else
//! of the emulator.

use jsonwebtoken::DecodingKey;
use sha1::Digest;

/// A registered certificate's thumbprints (raw digests) and public key.
pub(crate) struct CertificateKey {
    pub sha1: Vec<u8>,
    pub sha256: Vec<u8>,
    pub key: DecodingKey,
}

/// Parses a PEM certificate into its thumbprints (base64url, as `x5t` / `x5t#S256`) and key.
pub(crate) fn certificate_key(pem: &str) -> Result<CertificateKey, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|err| format!("not a PEM certificate: {err}"))?;
    let certificate = pem
        .parse_x509()
        .map_err(|err| format!("not an X.509 certificate: {err}"))?;
    let key = DecodingKey::from_rsa_der(&certificate.public_key().subject_public_key.data);
    Ok(CertificateKey {
        sha1: sha1::Sha1::digest(&pem.contents).to_vec(),
        sha256: sha2::Sha256::digest(&pem.contents).to_vec(),
        key,
    })
}
