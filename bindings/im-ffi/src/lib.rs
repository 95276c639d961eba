//! Foreign-language bindings of the client SDK.
//!
//! This crate will hold the thin uniffi layer over `im-sdk-rust`: plain records and enums,
//! errors as `thiserror` + `uniffi::Error`, event streams as observer callbacks whose handles
//! cancel on drop, and generated Kotlin, Swift and Python packages with tests of their own.

pub use im_sdk_rust as sdk;
