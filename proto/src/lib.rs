//! Ferry's gRPC API, package `ferry.v1`: the types, the `Ferry` service's client and server
//! (generated from `proto/ferry/v1/ferry.proto`, whose comments are the API reference), and
//! the file descriptor set for server reflection.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

/// The encoded `FileDescriptorSet` of `ferry.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_descriptor");

/// The largest request or response message, on purpose: a whole configuration with about
/// 4 million routes. A larger message is refused by gRPC (RESOURCE_EXHAUSTED), never read.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A channel to ferryd's unix socket at `path` (the URI tonic wants is not used).
pub async fn connect_unix(
    path: std::path::PathBuf,
    timeout: std::time::Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
}
