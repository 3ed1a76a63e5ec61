//! The control side: the admin server and readiness, the drain, credential reload and renewal,
//! and the authorization policy and its reload. Runs beside the data path (the admin thread).

pub mod admin;
pub mod credentials;
pub mod drain;
pub mod policy;
pub mod readiness;
