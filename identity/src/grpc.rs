//! A gRPC channel over one hyper HTTP/2 connection: what tonic's generated clients call, for the
//! control-plane APIs (identity `Certify`, Destination `Get`/`GetProfile`) without tonic's own
//! transport. The caller dials (TCP, TLS) and owns the connection task.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, Write};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use tonic::codegen::http;

/// One HTTP/2 connection as the tower service tonic's clients take.
#[derive(Clone, Debug)]
pub struct Channel(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl Channel {
    /// The HTTP/2 handshake on `io` and the connection task that drives it (spawn it; the
    /// channel fails once it ends). PINGs every 10 s find a controller that went away without
    /// closing (no answer within 3 s ends the connection), so long-lived streams notice.
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
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            .handshake::<_, tonic::body::Body>(io)
            .await?;
        Ok((Self(send), conn))
    }

    /// Whether the connection has ended (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
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
