//! Webhook signatures: HMAC-SHA256 of the raw body with a shared secret, in GitHub's
//! (`X-Hub-Signature-256: sha256=<hex>`) and Gitea's (`X-Gitea-Signature: <hex>`) header
//! forms, compared in constant time; deliveries seen before are refused as replays. A replay is
//! recognised by what the signature covers (the body), never by the delivery-id header, which
//! is not signed: anyone who captured a delivery can send it again under a new id.

use std::collections::{HashSet, VecDeque};

use hmac::{KeyInit, Mac};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no signature header (X-Hub-Signature-256 or X-Gitea-Signature)")]
    Missing,
    #[error("the signature is not hex")]
    Malformed,
    #[error("the signature does not match the body and the shared secret")]
    Mismatch,
    #[error("this delivery (body sha256 {0}) was accepted before (replay)")]
    Replay(String),
}

/// The shortest secret accepted, in bytes (after surrounding whitespace is trimmed).
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the webhook secret is empty (the file holds only whitespace); put a random secret in it, e.g. `openssl rand -hex 32 > FILE`")]
    Empty,
    #[error(
        "the webhook secret is {0} bytes long; use at least {MIN_SECRET_BYTES} (a short secret can be guessed offline from one signed delivery), e.g. `openssl rand -hex 32 > FILE`"
    )]
    Short(usize),
}

/// The HMAC key held in a secret file: its content without surrounding whitespace (the
/// trailing newline), at least `MIN_SECRET_BYTES` long.
pub fn secret_from_file(content: &[u8]) -> Result<Vec<u8>, SecretError> {
    match content.trim_ascii() {
        [] => Err(SecretError::Empty),
        s if s.len() < MIN_SECRET_BYTES => Err(SecretError::Short(s.len())),
        s => Ok(s.to_vec()),
    }
}

/// Check the signature of `body`; `header` looks a request header up by (lower-case) name.
pub fn verify<'a>(secret: &[u8], header: impl Fn(&str) -> Option<&'a str>, body: &[u8]) -> Result<(), WebhookError> {
    let hex_sig = if let Some(v) = header("x-hub-signature-256") {
        v.strip_prefix("sha256=").ok_or(WebhookError::Malformed)?
    } else if let Some(v) = header("x-gitea-signature").or_else(|| header("x-gogs-signature")) {
        v
    } else {
        return Err(WebhookError::Missing);
    };
    let sig = hex::decode(hex_sig.trim()).map_err(|_| WebhookError::Malformed)?;
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| WebhookError::Mismatch)
}

/// The delivery id of a request, when the forge sends one (for the log only: it is not signed).
pub fn delivery_id<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    header("x-github-delivery").or_else(|| header("x-gitea-delivery")).or_else(|| header("x-gogs-delivery"))
}

/// The deliveries accepted last, by the SHA-256 of their signed body, bounded. A forge's push
/// delivery names the pushed commits and when, so two real deliveries do not have the same body;
/// the same body again is a replay (or a redelivery, which asks for nothing new).
#[derive(Debug, Default)]
pub struct Seen {
    order: VecDeque<[u8; 32]>,
    set: HashSet<[u8; 32]>,
}

impl Seen {
    pub const CAPACITY: usize = 4096;
    /// Remember the verified `body`; Err when the same body was accepted before. Call it only
    /// after `verify`: an unsigned request must not fill the memory of accepted deliveries.
    pub fn check(&mut self, body: &[u8]) -> Result<(), WebhookError> {
        use sha2::Digest;
        let digest: [u8; 32] = Sha256::digest(body).into();
        if !self.set.insert(digest) {
            return Err(WebhookError::Replay(hex::encode(&digest[..8])));
        }
        self.order.push_back(digest);
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        Ok(())
    }
}

/// The signature header value a forge would send (for tests and for `fleetwright` users who
/// script their own hooks).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_and_gitea_signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"s3cret", body);
        let gh = format!("sha256={good}");
        assert_eq!(verify(b"s3cret", |h| (h == "x-hub-signature-256").then_some(gh.as_str()), body), Ok(()));
        assert_eq!(verify(b"s3cret", |h| (h == "x-gitea-signature").then_some(good.as_str()), body), Ok(()));
        assert_eq!(verify(b"other", |h| (h == "x-gitea-signature").then_some(good.as_str()), body), Err(WebhookError::Mismatch));
        assert_eq!(verify(b"s3cret", |h| (h == "x-gitea-signature").then_some(good.as_str()), b"tampered"), Err(WebhookError::Mismatch));
        assert_eq!(verify(b"s3cret", |h| (h == "x-hub-signature-256").then_some(good.as_str()), body), Err(WebhookError::Malformed));
        assert_eq!(verify(b"s3cret", |h| (h == "x-gitea-signature").then_some("zz"), body), Err(WebhookError::Malformed));
        assert_eq!(verify(b"s3cret", |_| None, body), Err(WebhookError::Missing));
        // A known vector (RFC 4231 test case 2).
        assert_eq!(sign(b"Jefe", b"what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn replays_are_refused_by_their_body_and_the_memory_is_bounded() {
        let mut seen = Seen::default();
        assert!(seen.check(b"push 1").is_ok());
        assert!(seen.check(b"push 2").is_ok());
        let e = seen.check(b"push 1").unwrap_err();
        assert!(matches!(&e, WebhookError::Replay(d) if d.len() == 16), "{e}");
        assert!(e.to_string().contains("was accepted before (replay)"), "{e}");
        // The oldest are forgotten past the capacity, and the memory stays bounded.
        for i in 0..Seen::CAPACITY {
            assert!(seen.check(format!("filler {i}").as_bytes()).is_ok());
        }
        assert_eq!(seen.order.len(), Seen::CAPACITY);
        assert_eq!(seen.set.len(), Seen::CAPACITY);
        assert!(seen.check(b"push 1").is_ok(), "forgotten after CAPACITY newer deliveries");
    }

    #[test]
    fn a_short_or_blank_secret_is_refused() {
        assert_eq!(secret_from_file(b""), Err(SecretError::Empty));
        assert_eq!(secret_from_file(b" \n\t \n"), Err(SecretError::Empty));
        assert_eq!(secret_from_file(b"s3cret\n"), Err(SecretError::Short(6)));
        // Whitespace does not count towards the length.
        assert_eq!(secret_from_file(b"   0123456789abcde\n"), Err(SecretError::Short(15)));
        assert_eq!(secret_from_file(b"0123456789abcdef\n").unwrap(), b"0123456789abcdef");
        assert!(SecretError::Short(6).to_string().contains("at least 16"));
    }
}
