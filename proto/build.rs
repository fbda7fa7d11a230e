//! Generates the ferry.v1 types, client and server from `ferry/v1/ferry.proto` with the
//! system's `protoc` (Debian: protobuf-compiler; `hack/setup.sh` installs it), and the file
//! descriptor set that gRPC server reflection serves.
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=ferry/v1/ferry.proto");
    if let Err(e) = tonic_build::configure()
        .file_descriptor_set_path(out.join("ferry_descriptor.bin"))
        .compile_protos(&["ferry/v1/ferry.proto"], &["."])
    {
        panic!("compiling ferry/v1/ferry.proto (is protoc installed? run hack/setup.sh): {e}");
    }
}
