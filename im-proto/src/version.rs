//! Protocol versions, the WebSocket subprotocol name and version negotiation.
//!
//! A version is a whole number. The client offers every version it speaks, twice: as WebSocket
//! subprotocols (`im.v1`, `im.v2`, ...) in the upgrade request, and in its `Hello`. The server
//! chooses the highest version both speak. Within a version the protocol only grows (new fields,
//! new variants, new error codes); anything else needs a new version.

use crate::v1::{ErrorCode, Hello};

/// The version this crate implements.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every version this crate can speak, oldest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[PROTOCOL_VERSION];

/// The largest frame, in bytes, a peer must accept when nothing smaller was announced (1 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

const SUBPROTOCOL_PREFIX: &str = "im.v";

/// The version-less subprotocol a client offers after its versions, so that a server with no
/// version in common can still complete the upgrade and answer with a typed
/// `UNSUPPORTED_VERSION` error.
pub const BARE_SUBPROTOCOL: &str = "im";

/// The WebSocket subprotocol name of a version: `im.v1` for 1.
pub fn subprotocol(version: u32) -> String {
    format!("{SUBPROTOCOL_PREFIX}{version}")
}

/// The version a subprotocol name stands for, if it is one of ours (`im.v1` -> 1). Leading
/// zeros and signs are rejected so that every version has exactly one name.
pub fn parse_subprotocol(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(SUBPROTOCOL_PREFIX)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !(digits.len() > 1 && digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// Offered and supported versions have nothing in common.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no common protocol version: offered {offered:?}, supported {supported:?}")]
pub struct UnsupportedVersion {
    /// What the peer offered.
    pub offered: Vec<u32>,
    /// What we speak.
    pub supported: Vec<u32>,
}

impl UnsupportedVersion {
    /// The error code a server answers with.
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::UnsupportedVersion
    }
}

/// The highest version present in both lists.
pub fn negotiate(offered: &[u32], supported: &[u32]) -> Result<u32, UnsupportedVersion> {
    offered
        .iter()
        .copied()
        .filter(|v| supported.contains(v))
        .max()
        .ok_or_else(|| UnsupportedVersion {
            offered: offered.to_vec(),
            supported: supported.to_vec(),
        })
}

/// The version a server speaking [`SUPPORTED_VERSIONS`] chooses for a `Hello`.
pub fn negotiate_hello(hello: &Hello) -> Result<u32, UnsupportedVersion> {
    negotiate(&hello.protocol_versions, SUPPORTED_VERSIONS)
}

/// The subprotocol a server chooses from the names a client offered in
/// `Sec-WebSocket-Protocol`, ignoring names that are not ours.
pub fn negotiate_subprotocol<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    supported: &[u32],
) -> Option<u32> {
    let versions: Vec<u32> = offered.into_iter().filter_map(parse_subprotocol).collect();
    negotiate(&versions, supported).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_names_round_trip() {
        assert_eq!(subprotocol(1), "im.v1");
        assert_eq!(parse_subprotocol("im.v1"), Some(1));
        assert_eq!(parse_subprotocol("im.v12"), Some(12));
        for bad in [
            "im.v",
            "im.v01",
            "im.v+1",
            "im.v-1",
            "im.1",
            "xim.v1",
            "im.v1 ",
            "im.v99999999999",
        ] {
            assert_eq!(parse_subprotocol(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate(&[1, 2, 3], &[1, 2]), Ok(2));
        assert_eq!(negotiate(&[3, 1], &[1, 3]), Ok(3));
        let err = negotiate(&[2, 3], &[1]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
        assert_eq!(err.supported, vec![1]);
        assert!(negotiate(&[], &[1]).is_err());
    }

    #[test]
    fn subprotocol_negotiation_ignores_foreign_names() {
        assert_eq!(
            negotiate_subprotocol(["chat", "im.v1", "im.v9"], &[1]),
            Some(1)
        );
        assert_eq!(negotiate_subprotocol(["chat"], &[1]), None);
    }
}
