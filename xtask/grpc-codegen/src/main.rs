//! Compiles Keyfort's protos into Rust (prost messages, tonic client and server) and writes
//! them into `crates/keyfort-grpc/src/generated/`, where they are committed so that building
//! Keyfort never needs `protoc`. Run through `cargo xtask codegen-grpc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: keyfort-grpc-codegen <workspace root>")?;
    let crate_dir = root.join("crates/keyfort-grpc");
    let out = crate_dir.join("src/generated");
    std::fs::create_dir_all(&out)?;
    let protos = ["grep11.proto", "keystore.proto"]
        .map(|p| crate_dir.join("proto").join(p))
        .into_iter()
        .filter(|p| p.exists())
        .collect::<Vec<_>>();
    tonic_prost_build::configure()
        .out_dir(&out)
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_protos(&protos, &[crate_dir.join("proto")])?;
    Ok(())
}
