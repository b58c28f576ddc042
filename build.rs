//! Generates the gRPC code from `proto/` with the `protoc` that ships in the
//! protoc-bin-vendored crate, so a build needs no system protoc. The encoded
//! descriptor set goes to OUT_DIR for the reflection service; nothing is
//! written into `src/`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("procgate_descriptor.bin"))
        .compile_with_config(config, &["proto/procgate/v1/procgate.proto"], &["proto"])?;
    Ok(())
}
