//! Compiles `proto/im/v1/*.proto` with protox (pure Rust: no system `protoc`) and generates the
//! prost types, plus the tonic client and server halves when their features are on.

use std::{env, error::Error, fs, path::PathBuf};

use prost_types::FileDescriptorSet;

const PROTO_ROOT: &str = "proto";
const PACKAGE_DIR: &str = "proto/im/v1";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    // Every .proto file of the package, so a new file cannot be left out of the build.
    let mut files = Vec::new();
    for entry in fs::read_dir(PACKAGE_DIR)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path.strip_prefix(PROTO_ROOT)?.to_owned());
        }
    }
    files.sort();
    let descriptors: FileDescriptorSet = protox::compile(&files, [PROTO_ROOT])?;

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
