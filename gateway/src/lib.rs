//! meshgate: an mTLS multicluster gateway. Remote proxies connect on 4143; the gateway
//! authenticates them against the shared trust anchors, reads where each request wants to go and
//! forwards it to a local service. Admin (`/ready`, `/live`, `/metrics`) listens on 4191.
//!
//! ```text
//! listener::run      accept → permit → spawn(conn::serve)                          listener.rs
//! conn::serve        one task per connection                                        conn.rs
//!  1 tls::accept       mTLS under the detect deadline → peer identity, ALPN          tls.rs, identity
//!  2 session           ALPN transport.l5d.io/v1 → transport header → Target +       transport_header.rs
//!                      protocol (HTTP/1, HTTP/2, opaque); h2/http1/none → HTTP      forward/http.rs, forward/tcp.rs
//!  3 route             header target, else l5d-dst-override, else :authority/Host   target.rs
//!  4 checks            suffix allowlist, loop (identity, Forwarded by=)             target.rs, forwarded.rs
//!  5 forward           rewrite headers, pooled upstream client                      forward/upstream.rs
//!  6 resolve+connect   static endpoints, else DNS; one retry on another endpoint     resolve.rs
//!  7 record            request/response/latency, transport bytes                    metrics.rs
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod certs;
pub mod check;
pub mod config;
pub mod conn;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod forward;
pub mod forwarded;
pub mod io;
pub mod listener;
pub mod manifests;
pub mod metrics;
pub mod policy;
pub mod reference;
pub mod resolve;
pub mod target;
pub mod tls;
pub mod transport_header;
