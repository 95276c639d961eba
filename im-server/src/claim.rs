//! A core node's id names its delivery subject, so two processes with one id would each miss
//! the deliveries meant for the other. A starting node claims its id on `im.node.<id>`; a
//! running node with that id answers, and the newcomer does not start.

use std::{sync::Arc, time::Duration};

use im_common::bus::{Bus, BusError, Incoming};
use im_proto::{
    bus,
    v1::{NodeState, NodeStatus},
};
use tokio::task::JoinHandle;

/// How long a starting node listens for a running node with its id. Only a bus other processes
/// share is asked: in one process, ids are the embedder's to keep apart.
const CLAIM_WAIT: Duration = Duration::from_millis(500);

/// Another process runs a node with this id.
#[derive(Debug, thiserror::Error)]
#[error(
    "cluster.node_id {node_id:?} is taken by a running node (version {version}, up since {since_ms} ms after the epoch): give each node its own id"
)]
pub struct NodeIdTaken {
    /// The id.
    pub node_id: String,
    /// The running node's version.
    pub version: String,
    /// When the running node said it started.
    pub since_ms: i64,
}

/// The claim errors.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another process holds the id.
    #[error(transparent)]
    Taken(#[from] NodeIdTaken),
    /// The bus refused the subscription or the request.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// Claims `node_id` on a shared bus: answers later claims of it from then on (the task
/// returned), and fails if a running node answers this one. Two nodes started at once with
/// one id answer each other, and neither starts.
pub async fn claim(bus: Arc<dyn Bus>, node_id: &str) -> Result<Option<JoinHandle<()>>, ClaimError> {
    if !bus.shared() {
        return Ok(None);
    }
    let subject = bus::node_subject(node_id);
    let own = NodeStatus {
        node_id: node_id.to_owned(),
        service: "core".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        state: NodeState::Starting.into(),
        time_ms: im_common::now_ms(),
        instance_id: uuid::Uuid::new_v4().simple().to_string(),
        ..NodeStatus::default()
    };
    let mut claims = bus.requests::<NodeStatus>(&subject, None).await?;
    let answering = bus.clone();
    let mine = own.clone();
    let answers = tokio::spawn(async move {
        while let Some(Incoming { request, responder }) = claims.next().await {
            let Ok(claim) = request else {
                continue;
            };
            if claim.instance_id == mine.instance_id {
                continue;
            }
            tracing::error!(
                node = %mine.node_id,
                "another process is starting with this node's id; it is told to stop"
            );
            let answer = NodeStatus {
                state: NodeState::Ready.into(),
                ..mine.clone()
            };
            if let Err(error) = responder.answer(answering.as_ref(), &answer).await {
                tracing::warn!(%error, "node id claim not answered");
            }
        }
    });
    let answered = match bus.call_to(&subject, &own, CLAIM_WAIT).await {
        // Any answer means a running node holds the id, even one that does not decode.
        Err(BusError::Malformed { .. }) => Ok(NodeStatus::default()),
        other => other,
    };
    match answered {
        Ok(running) => {
            answers.abort();
            Err(NodeIdTaken {
                node_id: node_id.to_owned(),
                version: running.version,
                since_ms: running.time_ms,
            }
            .into())
        }
        Err(BusError::Timeout { .. } | BusError::NoResponders(_)) => Ok(Some(answers)),
        Err(error) => {
            answers.abort();
            Err(error.into())
        }
    }
}
