//! Gateway users' passwords (argon2id). Users, grants and login throttling
//! come with the IMAP server.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// An argon2id PHC string (`$argon2id$v=19$m=…`) for `password`, with a
/// random salt and the crate's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

/// Does `password` match the PHC string `hash`? A malformed hash never
/// matches.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip() {
        let h = super::hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify_password("s3cret", &h));
        assert!(!super::verify_password("S3cret", &h));
        assert!(!super::verify_password("s3cret", "garbage"));
    }
}
