//! Access tokens: issued by the business service, or signed by the app itself, and verified on
//! every core node without a round trip.
//!
//! - Issued tokens are JWTs signed with HS256 and the cluster's token secret (`iss` = `im`),
//!   bound to a user (`sub`) and a device (`did`), with an expiry.
//! - App tokens are JWTs the app's backend signs with its own key (EdDSA, ES256 or RS256);
//!   nodes hold only the public key. `did` is optional there.
//! - Revocations (logout, kicked device, deactivated user) arrive as `im.ban` events and are
//!   applied with [`TokenVerifier::apply`]. An issued token carries the cut-offs in force when
//!   it was issued ([`CutOffs`], claim `rev`) and is refused once either has moved on, whatever
//!   its issue time says; an app-signed token, which has no such claim, is refused when issued
//!   before its user's (or device's) cut-off.

use std::{
    collections::{HashMap, HashSet},
    sync::RwLock,
};

use im_proto::v1::{BanEvent, BanKind, ErrorCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// The `iss` of tokens the platform issues.
pub const ISSUER: &str = "im";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    did: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    iss: String,
    iat: u64,
    exp: u64,
    /// The issue time in milliseconds, for revocations made in the same second.
    #[serde(default, skip_serializing_if = "is_zero")]
    iat_ms: u64,
    /// The revocation cut-offs in force at issue, `[user, device]` (platform tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rev: Option<[i64; 2]>,
}

/// The revocation cut-offs of a device: its user's (every device) and its own, 0 where none was
/// ever made. They only move forward, each revocation past the one before, so a token carrying
/// the cut-offs of its issue is valid exactly while they are still the latest: revocation does
/// not depend on the time a token claims to have been issued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutOffs {
    /// The user's cut-off, for every device.
    pub user_ms: i64,
    /// The device's own cut-off.
    pub device_ms: i64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Why a token was refused; each maps onto a protocol error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Missing, malformed, wrongly signed, or bound to another device.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Issued before a revocation of its user or device.
    #[error("token revoked")]
    Revoked,
    /// Issued after a revocation this node has not heard of yet: good in a moment.
    #[error("token issued after a revocation not known here yet")]
    RevocationPending,
    /// Its user was deactivated.
    #[error("user deactivated")]
    UserDisabled,
    /// The key material in the configuration is unusable.
    #[error("token key: {0}")]
    Key(String),
}

impl TokenError {
    /// The protocol error code.
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::Unauthenticated,
            Self::Expired => ErrorCode::TokenExpired,
            Self::Revoked => ErrorCode::TokenRevoked,
            Self::RevocationPending => ErrorCode::Unavailable,
            Self::UserDisabled => ErrorCode::UserDisabled,
            Self::Key(_) => ErrorCode::Internal,
        }
    }
}

/// Signs the platform's own tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer")
    }
}

impl TokenIssuer {
    /// An issuer signing with the cluster's token secret.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
        }
    }

    /// A token for `user_id` on `device_id`, a device never revoked, issued at `now_ms`, valid
    /// for `ttl_ms`.
    pub fn issue(
        &self,
        user_id: &str,
        device_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<String, TokenError> {
        self.issue_after(user_id, device_id, CutOffs::default(), now_ms, ttl_ms)
    }

    /// A token for `user_id` on `device_id` whose revocation cut-offs are `cut_offs` (read from
    /// the store before issuing, so that a revocation racing the issue wins), issued at
    /// `now_ms`, valid for `ttl_ms`.
    pub fn issue_after(
        &self,
        user_id: &str,
        device_id: &str,
        cut_offs: CutOffs,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            sub: user_id.to_owned(),
            did: device_id.to_owned(),
            iss: ISSUER.to_owned(),
            iat: (now_ms / 1000) as u64,
            exp: ((now_ms + ttl_ms) / 1000) as u64,
            iat_ms: now_ms as u64,
            rev: Some([cut_offs.user_ms, cut_offs.device_ms]),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| TokenError::Key(e.to_string()))
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The user.
    pub user_id: String,
    /// The device the token is bound to, if any.
    pub device_id: Option<String>,
    /// When it was issued.
    pub issued_at_ms: i64,
    /// When it expires.
    pub expires_at_ms: i64,
    /// What a later revocation is measured against.
    pub standing: Standing,
}

/// What decides whether a revocation ends a token already accepted (a live session's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A platform token, issued under these cut-offs.
    Under(CutOffs),
    /// An app-signed token, issued at this time (milliseconds).
    IssuedAt(i64),
}

impl Standing {
    /// Whether a revocation at `cut_off_ms`, of every device of the user when `every_device`
    /// (else of the token's own device), ends the token.
    pub fn revoked_by(&self, every_device: bool, cut_off_ms: i64) -> bool {
        match *self {
            Self::Under(under) if every_device => cut_off_ms > under.user_ms,
            Self::Under(under) => cut_off_ms > under.device_ms,
            Self::IssuedAt(at) => at < cut_off_ms,
        }
    }
}

/// The app's own signing key, for tokens the app issues itself.
#[derive(Debug, Clone)]
pub struct AppKey {
    /// EdDSA, ES256 or RS256.
    pub algorithm: Algorithm,
    /// The public key, PEM.
    pub public_key_pem: String,
    /// The `iss` the app's tokens carry: required, so that no token of another signer
    /// sharing the key passes for the app's.
    pub issuer: String,
    /// The `aud` the app's tokens carry, if it should be checked.
    pub audience: Option<String>,
}

/// Clock difference between signer and node tolerated on `exp` and `iat`, in seconds: a
/// token is accepted up to this long after its expiry, and one issued up to this long in the
/// future (by the node's clock); beyond that it is refused.
pub const LEEWAY_SECS: u64 = 5;

fn validation(algorithm: Algorithm, issuer: &str, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    validation.set_issuer(&[issuer]);
    match audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    validation
}

/// Verifies tokens and keeps the revocations it has heard of.
pub struct TokenVerifier {
    issued: (DecodingKey, Validation),
    app: Option<(DecodingKey, Validation)>,
    /// (user, device) -> cut-off; device "" stands for every device of the user.
    revoked_before: RwLock<HashMap<(String, String), i64>>,
    disabled: RwLock<HashSet<String>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("app_key", &self.app.is_some())
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier for the platform's tokens (the same secret as the issuer's) and, if given,
    /// the app's own.
    pub fn new(secret: &[u8], app: Option<&AppKey>) -> Result<Self, TokenError> {
        let app = match app {
            None => None,
            Some(key) => {
                let pem = key.public_key_pem.as_bytes();
                let decoding = match key.algorithm {
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
                    other => {
                        return Err(TokenError::Key(format!("unsupported algorithm {other:?}")));
                    }
                }
                .map_err(|e| TokenError::Key(e.to_string()))?;
                if key.issuer.is_empty() {
                    return Err(TokenError::Key(
                        "an app key needs the issuer (iss) its tokens carry".into(),
                    ));
                }
                let checks = validation(key.algorithm, &key.issuer, key.audience.as_deref());
                Some((decoding, checks))
            }
        };
        Ok(Self {
            issued: (
                DecodingKey::from_secret(secret),
                validation(Algorithm::HS256, ISSUER, None),
            ),
            app,
            revoked_before: RwLock::default(),
            disabled: RwLock::default(),
        })
    }

    /// Checks a token presented by `device_id`.
    pub fn verify(&self, token: &str, device_id: &str) -> Result<VerifiedToken, TokenError> {
        self.check(token, Some(device_id))
    }

    /// Checks a token presented without a device (an API call on the user's behalf): a token
    /// bound to a device counts as that device's, revocations of the device included.
    pub fn verify_any_device(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.check(token, None)
    }

    fn check(&self, token: &str, device: Option<&str>) -> Result<VerifiedToken, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let (key, checks) = match &self.app {
            _ if header.alg == Algorithm::HS256 => (&self.issued.0, &self.issued.1),
            Some((key, checks)) if checks.algorithms.contains(&header.alg) => (key, checks),
            _ => {
                return Err(TokenError::Invalid(format!(
                    "algorithm {:?} not accepted",
                    header.alg
                )));
            }
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, checks)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?
            .claims;
        if let Some(device_id) = device
            && !claims.did.is_empty()
            && claims.did != device_id
        {
            return Err(TokenError::Invalid(
                "token is bound to another device".into(),
            ));
        }
        let device_id = device.unwrap_or(&claims.did);
        let issued_at_ms = if claims.iat_ms > 0 {
            claims.iat_ms as i64
        } else {
            claims.iat as i64 * 1000
        };
        // A token from the future would outlive every revocation made before its `iat`.
        if issued_at_ms > crate::now_ms() + (LEEWAY_SECS * 1000) as i64 {
            return Err(TokenError::Invalid("issued in the future (iat)".into()));
        }
        if read(&self.disabled).contains(&claims.sub) {
            return Err(TokenError::UserDisabled);
        }
        let known = self.cut_offs(&claims.sub, device_id);
        let standing = match claims.rev {
            // A platform token: valid while the cut-offs it was issued under are the latest.
            Some([user_ms, device_ms]) => {
                let issued = CutOffs { user_ms, device_ms };
                if issued.user_ms < known.user_ms || issued.device_ms < known.device_ms {
                    return Err(TokenError::Revoked);
                }
                if issued != known {
                    return Err(TokenError::RevocationPending);
                }
                Standing::Under(issued)
            }
            // An app-signed token: the app stands for its issue time.
            None => {
                if issued_at_ms < known.user_ms.max(known.device_ms) {
                    return Err(TokenError::Revoked);
                }
                Standing::IssuedAt(issued_at_ms)
            }
        };
        Ok(VerifiedToken {
            user_id: claims.sub,
            device_id: (!claims.did.is_empty()).then_some(claims.did),
            issued_at_ms,
            expires_at_ms: claims.exp as i64 * 1000,
            standing,
        })
    }

    /// The cut-offs this verifier knows for `device_id` of `user_id`.
    pub fn cut_offs(&self, user_id: &str, device_id: &str) -> CutOffs {
        let revocations = read(&self.revoked_before);
        let cut_off = |device: &str| {
            revocations
                .get(&(user_id.to_owned(), device.to_owned()))
                .copied()
                .unwrap_or(0)
        };
        CutOffs {
            user_ms: cut_off(""),
            device_ms: if device_id.is_empty() {
                0
            } else {
                cut_off(device_id)
            },
        }
    }

    /// Records a revocation: tokens of `user_id` (on `device_id`, or every device when empty)
    /// issued under an earlier cut-off are refused from now on. Cut-offs only move forward.
    pub fn revoke(&self, user_id: &str, device_id: &str, before_ms: i64) {
        let mut revocations = write(&self.revoked_before);
        let entry = revocations
            .entry((user_id.to_owned(), device_id.to_owned()))
            .or_insert(before_ms);
        *entry = (*entry).max(before_ms);
    }

    /// Applies an `im.ban` event; other kinds of bans do not concern tokens.
    pub fn apply(&self, event: &BanEvent) {
        match event.kind() {
            BanKind::TokensRevoked => self.revoke(&event.user_id, &event.device_id, event.until_ms),
            BanKind::UserDeactivated => {
                write(&self.disabled).insert(event.user_id.clone());
            }
            _ => {}
        }
    }
}

impl TokenVerifier {
    /// Subscribes to `im.ban`, then applies every revocation and deactivation in a task of
    /// its own until the bus closes, for a service that follows no other event (a core node
    /// applies them through its event intake instead). Events published after this returns
    /// are not missed.
    pub async fn follow(
        self: std::sync::Arc<Self>,
        bus: &dyn crate::bus::Bus,
    ) -> Result<tokio::task::JoinHandle<()>, crate::bus::BusError> {
        let mut bans = bus.events::<BanEvent>().await?;
        Ok(tokio::spawn(async move {
            while let Some(event) = bans.next().await {
                self.apply(&event);
            }
        }))
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poison| poison.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test secret, at least thirty-two bytes long";
    // A throwaway Ed25519 key pair for the app-signed tokens.
    const APP_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDlMD2GUna8k2I49tbhIqmOvM0ZM5//PtpY5JfNnVJEj\n-----END PRIVATE KEY-----\n";
    const APP_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAp66dpB3vORrz/iJu5708ZLPgTedgdJ7x8olpmYesVw0=\n-----END PUBLIC KEY-----\n";

    /// Now, in whole seconds (as JWT times are), in milliseconds.
    fn now_ms() -> i64 {
        crate::now_ms() / 1000 * 1000
    }

    fn verifier() -> TokenVerifier {
        let app = AppKey {
            algorithm: Algorithm::EdDSA,
            public_key_pem: APP_PUBLIC.into(),
            issuer: "app".into(),
            audience: None,
        };
        TokenVerifier::new(SECRET, Some(&app)).unwrap()
    }

    fn app_token(claims: &Claims) -> String {
        let key = EncodingKey::from_ed_pem(APP_PRIVATE.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).unwrap()
    }

    #[test]
    fn issued_tokens_verify_for_their_device_only() {
        let now = now_ms();
        let token = TokenIssuer::new(SECRET)
            .issue("amy", "phone", now, 3_600_000)
            .unwrap();
        let verified = verifier().verify(&token, "phone").unwrap();
        assert_eq!(verified.user_id, "amy");
        assert_eq!(verified.device_id.as_deref(), Some("phone"));
        assert_eq!(verified.issued_at_ms, now);
        let err = verifier().verify(&token, "laptop").unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn bad_tokens_are_refused_with_their_codes() {
        let v = verifier();
        assert_eq!(
            v.verify("", "d").unwrap_err().code(),
            ErrorCode::Unauthenticated
        );
        assert_eq!(
            v.verify("not.a.jwt", "d").unwrap_err().code(),
            ErrorCode::Unauthenticated
        );
        let forged = TokenIssuer::new(b"another secret of thirty-two bytes!!")
            .issue("amy", "d", now_ms(), 60_000)
            .unwrap();
        assert_eq!(
            v.verify(&forged, "d").unwrap_err().code(),
            ErrorCode::Unauthenticated
        );
        let old = TokenIssuer::new(SECRET)
            .issue("amy", "d", now_ms() - 7_200_000, 3_600_000)
            .unwrap();
        assert_eq!(v.verify(&old, "d").unwrap_err(), TokenError::Expired);
    }

    #[test]
    fn app_signed_tokens_need_the_app_key_and_issuer() {
        let now = (now_ms() / 1000) as u64;
        let claims = |iss: &str| Claims {
            sub: "bob".into(),
            did: String::new(),
            iss: iss.into(),
            iat: now,
            exp: now + 600,
            iat_ms: 0,
            rev: None,
        };
        let verified = verifier()
            .verify(&app_token(&claims("app")), "any-device")
            .unwrap();
        assert_eq!(
            (verified.user_id.as_str(), verified.device_id),
            ("bob", None)
        );
        assert_eq!(
            verifier()
                .verify(&app_token(&claims("evil")), "d")
                .unwrap_err()
                .code(),
            ErrorCode::Unauthenticated
        );
        assert_eq!(
            verifier()
                .verify(&app_token(&claims("")), "d")
                .unwrap_err()
                .code(),
            ErrorCode::Unauthenticated,
            "a token without iss"
        );
        let no_issuer = AppKey {
            algorithm: Algorithm::EdDSA,
            public_key_pem: APP_PUBLIC.into(),
            issuer: String::new(),
            audience: None,
        };
        assert!(matches!(
            TokenVerifier::new(SECRET, Some(&no_issuer)),
            Err(TokenError::Key(_))
        ));
        let without_app_key = TokenVerifier::new(SECRET, None).unwrap();
        assert_eq!(
            without_app_key
                .verify(&app_token(&claims("app")), "d")
                .unwrap_err()
                .code(),
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn tokens_issued_in_the_future_are_refused_beyond_the_leeway() {
        let v = verifier();
        let leeway = (LEEWAY_SECS * 1000) as i64;
        let issue = |iat_ms: i64| {
            TokenIssuer::new(SECRET)
                .issue("amy", "d", iat_ms, 3_600_000)
                .unwrap()
        };
        assert!(v.verify(&issue(crate::now_ms() + leeway / 2), "d").is_ok());
        let ahead = issue(crate::now_ms() + leeway + 60_000);
        assert_eq!(
            v.verify(&ahead, "d").unwrap_err().code(),
            ErrorCode::Unauthenticated
        );
        // An app-signed one too, whatever its signer's clock says.
        let now = (now_ms() / 1000) as u64;
        let claims = Claims {
            sub: "bob".into(),
            did: String::new(),
            iss: "app".into(),
            iat: now + 3_600,
            exp: now + 7_200,
            iat_ms: 0,
            rev: None,
        };
        assert!(v.verify(&app_token(&claims), "d").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn revocations_arrive_over_the_bus() {
        use crate::bus::{Bus, LocalBus};
        let bus: std::sync::Arc<dyn Bus> = std::sync::Arc::new(LocalBus::default());
        let v = std::sync::Arc::new(verifier());
        v.clone().follow(bus.as_ref()).await.unwrap();
        let now = now_ms();
        let token = TokenIssuer::new(SECRET)
            .issue("amy", "phone", now, 60_000)
            .unwrap();
        assert!(v.verify(&token, "phone").is_ok());
        let logout = BanEvent {
            kind: BanKind::TokensRevoked.into(),
            user_id: "amy".into(),
            until_ms: now + 1,
            ..Default::default()
        };
        bus.emit(&logout).await.unwrap();
        for _ in 0..1_000 {
            if v.verify(&token, "phone").is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(v.verify(&token, "phone").unwrap_err(), TokenError::Revoked);
    }

    #[test]
    fn app_audiences_are_checked_only_when_configured() {
        let now = (now_ms() / 1000) as u64;
        let key = EncodingKey::from_ed_pem(APP_PRIVATE.as_bytes()).unwrap();
        let token = |aud: &str| {
            let claims = serde_json::json!({ "sub": "bob", "iss": "app", "aud": aud, "iat": now, "exp": now + 600 });
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
        };
        assert!(
            verifier().verify(&token("chat"), "d").is_ok(),
            "no audience configured: any is fine"
        );
        let app = AppKey {
            algorithm: Algorithm::EdDSA,
            public_key_pem: APP_PUBLIC.into(),
            issuer: "app".into(),
            audience: Some("chat".into()),
        };
        let strict = TokenVerifier::new(SECRET, Some(&app)).unwrap();
        assert!(strict.verify(&token("chat"), "d").is_ok());
        assert_eq!(
            strict.verify(&token("billing"), "d").unwrap_err().code(),
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn revocation_ignores_what_a_token_says_of_its_own_age() {
        let issuer = TokenIssuer::new(SECRET);
        let v = verifier();
        let now = crate::now_ms();
        v.revoke("amy", "", now - 60_000);
        let current = v.cut_offs("amy", "phone");
        assert_eq!(current.user_ms, now - 60_000);
        // Signed under the cut-offs before the revocation, however late it claims to be issued.
        let stale = issuer
            .issue_after("amy", "phone", CutOffs::default(), now, 60_000)
            .unwrap();
        assert_eq!(v.verify(&stale, "phone").unwrap_err(), TokenError::Revoked);
        let good = issuer
            .issue_after("amy", "phone", current, now, 60_000)
            .unwrap();
        assert!(v.verify(&good, "phone").is_ok());
        // Issued before the cut-off by the clock, but under it: revocation counts, not age.
        let early = issuer
            .issue_after("amy", "phone", current, now - 120_000, 180_000)
            .unwrap();
        assert!(v.verify(&early, "phone").is_ok());
        // Under a cut-off this node has not heard of yet: refused for now, to be retried.
        let ahead = CutOffs {
            device_ms: now,
            ..current
        };
        let newer = issuer
            .issue_after("amy", "phone", ahead, now, 60_000)
            .unwrap();
        let err = v.verify(&newer, "phone").unwrap_err();
        assert_eq!(
            (err.clone(), err.code()),
            (TokenError::RevocationPending, ErrorCode::Unavailable)
        );
        v.revoke("amy", "phone", now);
        let accepted = v.verify(&newer, "phone").unwrap();
        assert!(
            !accepted.standing.revoked_by(false, now),
            "the revocation it was issued under"
        );
        assert!(accepted.standing.revoked_by(false, now + 1));
        assert!(!accepted.standing.revoked_by(true, current.user_ms));
        assert!(accepted.standing.revoked_by(true, current.user_ms + 1));
        assert_eq!(v.verify(&good, "phone").unwrap_err(), TokenError::Revoked);
    }

    #[test]
    fn revocations_and_deactivation() {
        let issuer = TokenIssuer::new(SECRET);
        let v = verifier();
        let now = now_ms();
        let phone = issuer.issue("amy", "phone", now, 60_000).unwrap();
        let laptop = issuer.issue("amy", "laptop", now, 60_000).unwrap();
        v.apply(&BanEvent {
            kind: BanKind::TokensRevoked.into(),
            user_id: "amy".into(),
            device_id: "phone".into(),
            until_ms: now + 1,
            ..Default::default()
        });
        assert_eq!(
            v.verify(&phone, "phone").unwrap_err().code(),
            ErrorCode::TokenRevoked
        );
        assert!(
            v.verify(&laptop, "laptop").is_ok(),
            "only the phone was logged out"
        );
        let after = CutOffs {
            user_ms: 0,
            device_ms: now + 1,
        };
        let fresh = issuer
            .issue_after("amy", "phone", after, now + 1, 60_000)
            .unwrap();
        assert!(
            v.verify(&fresh, "phone").is_ok(),
            "a token issued under the latest cut-offs is good"
        );
        v.revoke("amy", "phone", now - 1_000);
        assert!(
            v.verify(&fresh, "phone").is_ok(),
            "cut-offs never move back"
        );

        v.apply(&BanEvent {
            kind: BanKind::UserDeactivated.into(),
            user_id: "amy".into(),
            ..Default::default()
        });
        assert_eq!(
            v.verify(&laptop, "laptop").unwrap_err().code(),
            ErrorCode::UserDisabled
        );
    }
}
