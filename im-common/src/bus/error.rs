//! What can go wrong on the bus.

use std::time::Duration;

use im_proto::{ErrorCode, v1};

/// A cause from a transport (a NATS client error, a timeout), kept for the error chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// Nobody answered a request in time.
    #[error("no answer on {subject} within {timeout:?}")]
    Timeout {
        /// The request's subject.
        subject: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Nobody listens on the subject of a request.
    #[error("no responder on {0}")]
    NoResponders(String),
    /// The bus is gone (shut down).
    #[error("bus closed")]
    Closed,
    /// The bus cannot be reached now (a lost connection; it reconnects by itself).
    #[error("bus unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// An answer that does not decode as the reply its request names.
    #[error("malformed answer on {subject}: {source}")]
    Malformed {
        /// The request's subject.
        subject: String,
        /// What the decoder said.
        source: prost::DecodeError,
    },
    /// The responder answered with a refusal (a group that does not exist, a fault there).
    #[error("{subject} refused: {} {}", error.code().name(), error.message)]
    Refused {
        /// The request's subject.
        subject: String,
        /// The refusal, with its protocol code.
        error: v1::Error,
    },
}

impl BusError {
    /// The bus cannot be reached now, because of `cause`.
    pub fn unavailable(cause: impl Into<Cause>) -> Self {
        Self::Unavailable(cause.into())
    }

    /// The protocol code a caller answers with when the bus failed it: the responder's own
    /// for a refusal, else TIMEOUT, UNAVAILABLE or INTERNAL.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Refused { error, .. } => error.code(),
            Self::Timeout { .. } => ErrorCode::Timeout,
            Self::NoResponders(_) | Self::Closed | Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Malformed { .. } => ErrorCode::Internal,
        }
    }
}
