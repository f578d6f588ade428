//! Admission tokens: a user id and an expiry, signed with HMAC-SHA256 by the server secret.
//!
//! Text form: `pp1.<base64url(user)>.<expiry unix seconds>.<base64url(mac)>`, where the
//! MAC covers the domain string, the user and the expiry. Tokens are bearer
//! credentials for a *user*; the device key proves which device presents one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The most bytes a user id may have.
pub const MAX_USER_LEN: usize = 128;
/// The most bytes a token may have in text form.
pub const MAX_TOKEN_LEN: usize = 512;
/// The least number of bytes a server secret must have.
pub const MIN_SECRET_LEN: usize = 32;

const PREFIX: &str = "pp1";
const DOMAIN: &[u8] = b"peerpipe-token-v1\0";

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is not of the `pp1.user.expiry.mac` form.
    #[error("malformed token")]
    Malformed,
    /// The MAC does not match: the token was not minted with this server's secret.
    #[error("token signature is not valid for this server")]
    BadMac,
    /// The token's expiry has passed.
    #[error("token expired at {expired_at} (unix seconds)")]
    Expired {
        /// When it expired, in unix seconds.
        expired_at: u64,
    },
    /// The user id is empty, too long or has control characters.
    #[error("user id must be 1 to {MAX_USER_LEN} bytes without control characters")]
    BadUser,
    /// The secret is too short to sign with.
    #[error("the server secret must have at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
}

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user the token admits.
    pub user: String,
    /// Expiry in unix seconds.
    pub expires_at: u64,
}

fn check_user(user: &str) -> Result<(), TokenError> {
    if user.is_empty() || user.len() > MAX_USER_LEN || user.chars().any(char::is_control) {
        return Err(TokenError::BadUser);
    }
    Ok(())
}

fn mac(secret: &[u8], user: &str, expires_at: u64) -> Result<Hmac<Sha256>, TokenError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(TokenError::WeakSecret);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::WeakSecret)?;
    mac.update(DOMAIN);
    mac.update(user.as_bytes());
    mac.update(b"\0");
    mac.update(&expires_at.to_be_bytes());
    Ok(mac)
}

/// Mints a token for `user` that expires at `expires_at` (unix seconds).
pub fn mint(secret: &[u8], user: &str, expires_at: u64) -> Result<String, TokenError> {
    check_user(user)?;
    let tag = mac(secret, user, expires_at)?.finalize().into_bytes();
    Ok(format!(
        "{PREFIX}.{}.{expires_at}.{}",
        URL_SAFE_NO_PAD.encode(user),
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

/// Verifies `token` against `secret` at time `now` (unix seconds).
///
/// The MAC is checked in constant time before the expiry, so an attacker learns
/// nothing about a forged token's fields.
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(PREFIX), Some(user), Some(expiry), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let user = URL_SAFE_NO_PAD
        .decode(user)
        .ok()
        .and_then(|u| String::from_utf8(u).ok())
        .ok_or(TokenError::Malformed)?;
    check_user(&user).map_err(|_| TokenError::Malformed)?;
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expires_at: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed)?;
    mac(secret, &user, expires_at)?
        .verify_slice(&tag)
        .map_err(|_| TokenError::BadMac)?;
    if now >= expires_at {
        return Err(TokenError::Expired {
            expired_at: expires_at,
        });
    }
    Ok(Claims { user, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [9; 32];

    #[test]
    fn minted_token_verifies() {
        let t = mint(&SECRET, "alice@example.org", 1_000).unwrap();
        let c = verify(&SECRET, &t, 999).unwrap();
        assert_eq!(c.user, "alice@example.org");
        assert_eq!(c.expires_at, 1_000);
    }

    #[test]
    fn expired_token_is_refused() {
        let t = mint(&SECRET, "alice", 1_000).unwrap();
        assert_eq!(
            verify(&SECRET, &t, 1_000),
            Err(TokenError::Expired { expired_at: 1_000 })
        );
    }

    #[test]
    fn other_secret_or_edited_fields_are_refused() {
        let t = mint(&SECRET, "alice", 1_000).unwrap();
        assert_eq!(verify(&[8; 32], &t, 0), Err(TokenError::BadMac));
        let bob = t.replace(
            &URL_SAFE_NO_PAD.encode("alice"),
            &URL_SAFE_NO_PAD.encode("bob"),
        );
        assert_eq!(verify(&SECRET, &bob, 0), Err(TokenError::BadMac));
        let later = t.replace(".1000.", ".9000.");
        assert_eq!(verify(&SECRET, &later, 0), Err(TokenError::BadMac));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "pp1",
            "pp1.a.1",
            "pp2.YQ.1.AA",
            "pp1.YQ.x1.AA",
            "pp1.YQ.1.AA.x",
            "pp1.!!.1.AA",
        ] {
            assert_eq!(verify(&SECRET, bad, 0), Err(TokenError::Malformed), "{bad}");
        }
        assert_eq!(
            verify(&SECRET, &"a".repeat(600), 0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn weak_secret_and_bad_user_are_refused() {
        assert_eq!(mint(&[1; 8], "a", 1), Err(TokenError::WeakSecret));
        assert_eq!(mint(&SECRET, "", 1), Err(TokenError::BadUser));
        assert_eq!(mint(&SECRET, "a\nb", 1), Err(TokenError::BadUser));
    }
}
