//! Forwarding to local services: the HTTP server side per downstream connection and the pooled
//! upstream clients.

pub mod http;
pub mod tcp;
pub mod upstream;
