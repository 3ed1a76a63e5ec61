//! A gRPC channel over one hyper HTTP/2 connection: what tonic's generated clients call, for the
//! control-plane APIs (identity `Certify`, Destination `Get`/`GetProfile`) without tonic's own
//! transport. The caller dials (TCP, TLS) and owns the connection task.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, Write};
use hyper_util::rt::TokioExecutor;
use tonic::codegen::http;

/// One HTTP/2 connection as the tower service tonic's clients take.
#[derive(Clone, Debug)]
pub struct Channel(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl Channel {
    /// The HTTP/2 handshake on `io` and the connection task that drives it (spawn it; the
    /// channel fails once it ends).
    ///
    /// # Errors
    /// The handshake's.
    pub async fn handshake<IO>(
        io: IO,
    ) -> Result<
        (
            Self,
            impl std::future::Future<Output = Result<(), hyper::Error>> + Send,
        ),
        hyper::Error,
    >
    where
        IO: Read + Write + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, tonic::body::Body>(io)
            .await?;
        Ok((Self(send), conn))
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}
