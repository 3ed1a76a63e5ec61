//! The data path of one downstream connection, from accept to forward; `conn::serve` reads top to
//! bottom. Everything here reads [`context::Shared`]; nothing below `proxy` imports from it.

pub mod conn;
pub mod context;
pub mod error;
pub mod forwarded;
pub mod http;
pub mod listener;
pub mod route;
pub mod tcp;
pub mod tls;
