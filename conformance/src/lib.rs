//! The conformance suite.
//!
//! `conformance/vectors/` holds the golden wire vectors (checked today by `im-proto`'s tests);
//! this crate will hold the runner: language-neutral scenarios in `conformance/scenarios/`, the
//! JSON-lines driver protocol that commands any client implementation, and raw wire checks of
//! any server at a URL.

pub use im_proto as proto;
