//! Compiles `proto/im/v1/*.proto` with protox (pure Rust: no system `protoc`) and generates the
//! prost types, plus the tonic client and server halves when their features are on.

use std::{env, error::Error, fs, path::PathBuf};

use prost_types::FileDescriptorSet;

const PROTO_ROOT: &str = "proto";
const FILES: &[&str] = &[
    "im/v1/errors.proto",
    "im/v1/messaging.proto",
    "im/v1/frames.proto",
    "im/v1/bus.proto",
    "im/v1/business.proto",
    "im/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors: FileDescriptorSet = protox::compile(FILES, [PROTO_ROOT])?;

    // Kept for runtime reflection: JSON vectors, gRPC reflection, other tooling.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("im_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_transport(false)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
