//! Webhook signatures: HMAC-SHA256 of the raw body with a shared secret, in GitHub's
//! (`X-Hub-Signature-256: sha256=<hex>`) and Gitea's (`X-Gitea-Signature: <hex>`) header
//! forms, compared in constant time; deliveries seen before are refused as replays.

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
    #[error("delivery {0} was seen before (replay)")]
    Replay(String),
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

/// The delivery id of a request, when the forge sends one.
pub fn delivery_id<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    header("x-github-delivery").or_else(|| header("x-gitea-delivery")).or_else(|| header("x-gogs-delivery"))
}

/// The last deliveries seen, bounded.
#[derive(Debug, Default)]
pub struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    const CAPACITY: usize = 4096;
    /// Remember `id`; Err when it was seen already.
    pub fn check(&mut self, id: &str) -> Result<(), WebhookError> {
        if !self.set.insert(id.to_string()) {
            return Err(WebhookError::Replay(id.to_string()));
        }
        self.order.push_back(id.to_string());
        if self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
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
    fn replays_are_refused() {
        let mut seen = Seen::default();
        assert!(seen.check("a").is_ok());
        assert!(seen.check("b").is_ok());
        assert_eq!(seen.check("a"), Err(WebhookError::Replay("a".into())));
    }
}
