//! The token revocations on record, which a starting core node must know before it accepts a
//! token: asked of the business service a page at a time on `im.revocations` (later ones
//! arrive on `im.ban`, which the node follows before it asks).

use std::time::Duration;

use im_common::{
    auth::TokenVerifier,
    bus::{Bus, BusError},
};
use im_proto::v1::RevocationsQuery;

/// Revocations asked for per `im.revocations` request.
const REVOCATIONS_PAGE: u32 = 1_000;

/// How long to wait before asking again after a failed ask.
const RETRY: Duration = Duration::from_millis(500);

/// Applies to `verifier` the token revocations made before this node started. A node that
/// cannot learn them within `wait` does not start (the error says why): it would accept
/// revoked tokens.
pub async fn load(
    bus: &dyn Bus,
    verifier: &TokenVerifier,
    wait: Duration,
    timeout: Duration,
) -> Result<usize, BusError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut query = RevocationsQuery {
        limit: REVOCATIONS_PAGE,
        ..RevocationsQuery::default()
    };
    let mut loaded = 0;
    loop {
        let error = match bus.call(&query, timeout).await {
            Ok(list) => {
                for revocation in &list.revocations {
                    verifier.apply(revocation);
                }
                loaded += list.revocations.len();
                match list.revocations.last() {
                    // A page that does not move on would be asked forever. (Only the database
                    // orders keys: its collation need not be this process's byte order.)
                    Some(last)
                        if list.more
                            && (&last.user_id, &last.device_id)
                                != (&query.after_user_id, &query.after_device_id) =>
                    {
                        query.after_user_id.clone_from(&last.user_id);
                        query.after_device_id.clone_from(&last.device_id);
                        if tokio::time::Instant::now() < deadline {
                            continue;
                        }
                        BusError::unavailable("the revocations took too long to load")
                    }
                    Some(_) if list.more => {
                        BusError::unavailable("a page of revocations did not move on")
                    }
                    _ => {
                        tracing::info!(revocations = loaded, "token revocations loaded");
                        return Ok(loaded);
                    }
                }
            }
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        tracing::warn!(%error, "waiting for the business service's revocations");
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use im_common::{
        auth::TokenIssuer,
        bus::{LocalBus, encode, respond},
    };
    use im_proto::{
        bus,
        v1::{BanEvent, BanKind, RevocationList},
    };
    use prost::Message;
    use tokio::task::JoinHandle;

    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!";

    /// A responder serving `revoked` users' revocations in pages of `page`, as the business
    /// service does; returns how many queries it answered.
    async fn serve_pages(
        bus: Arc<dyn Bus>,
        revoked: Vec<String>,
        page: usize,
    ) -> JoinHandle<usize> {
        let mut queries = bus.subscribe(bus::REVOCATIONS).await.unwrap();
        tokio::spawn(async move {
            let mut answered = 0;
            while let Some(message) = queries.next().await {
                let query = RevocationsQuery::decode(message.payload.clone()).unwrap();
                let rest: Vec<&String> = revoked
                    .iter()
                    .filter(|user| user.as_str() > query.after_user_id.as_str())
                    .collect();
                let list = RevocationList {
                    revocations: rest
                        .iter()
                        .take(page)
                        .map(|user| BanEvent {
                            kind: BanKind::TokensRevoked.into(),
                            user_id: (*user).clone(),
                            until_ms: i64::MAX,
                            ..BanEvent::default()
                        })
                        .collect(),
                    more: rest.len() > page,
                    error: None,
                };
                respond(bus.as_ref(), &message, encode(&list))
                    .await
                    .unwrap();
                answered += 1;
                if !list.more {
                    return answered;
                }
            }
            answered
        })
    }

    #[tokio::test]
    async fn a_starting_node_loads_every_page_of_revocations() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let revoked: Vec<String> = (0..2_500).map(|i| format!("user{i:05}")).collect();
        let responder = serve_pages(bus.clone(), revoked, 1_000).await;
        let verifier = TokenVerifier::new(SECRET, None).unwrap();
        let loaded = load(
            bus.as_ref(),
            &verifier,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(loaded, 2_500);
        assert_eq!(responder.await.unwrap(), 3, "three pages asked for");
        let issuer = TokenIssuer::new(SECRET);
        let token = |user: &str| {
            issuer
                .issue(user, "d", im_common::now_ms(), 60_000)
                .unwrap()
        };
        for user in ["user00000", "user01999", "user02499"] {
            assert!(
                verifier.verify(&token(user), "d").is_err(),
                "{user}'s token is revoked"
            );
        }
        assert!(verifier.verify(&token("someone"), "d").is_ok());
    }
}
