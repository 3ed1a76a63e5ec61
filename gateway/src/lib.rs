//! meshgate: an mTLS multicluster gateway. Remote proxies connect on 4143; the gateway
//! authenticates them against the shared trust anchors, decides where each request may go and
//! forwards it to a local service. Admin (`/ready`, `/live`, `/metrics`) listens on 4191.
//!
//! ```text
//! proxy::listener::run   accept → permit → spawn(conn::serve)                 proxy/listener.rs
//! proxy::conn::serve     one task per connection, top to bottom               proxy/conn.rs
//!  1 tls::accept           mTLS under the detect deadline → peer, ALPN         proxy/tls.rs, identity
//!  2 session               transport.l5d.io/v1 → transport header; else HTTP   transport_header.rs
//!  3 route::decide         target, loop, authorization → Decision (pure)       proxy/route.rs
//!  4 discover + balance    target → endpoint (static, DNS; P2C/peak-EWMA)      upstream/
//!  5 connect               TCP (pooled HTTP/1, one HTTP/2 per endpoint)        upstream/pool.rs, connect.rs
//!  6 forward               HTTP rewrite + exchange, or opaque copy             proxy/http.rs, proxy/tcp.rs
//!  7 record                one error at the edge; metrics from it              proxy/error.rs, metrics/
//! ```
//!
//! Modules, each below the ones that use it:
//! - `app`: startup order and ownership → `Bound`.
//! - `proxy`: the data path (context, listener, conn, tls, transport header, route, http, tcp, error).
//! - `upstream`: discover, balance, pool, connect.
//! - `control`: admin, readiness, drain, credentials, policy.
//! - `metrics`: families with Linkerd's names, label sets, the connection recorder.
//! - `config`: every key declared once; loading, validation, reference.
//! - `target`, `socket`: the target name and allowlist; listening sockets.
//! - `cli`: operator tools (certs, check, demo, manifests, reference) and the mesh client.
//! - `testing` (feature `testing`): what the test crates share.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod limit;
pub mod metrics;
pub mod proxy;
pub mod socket;
pub mod target;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport_header;
pub mod upstream;
