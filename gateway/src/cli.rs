//! Operator tools beside the gateway: `certs`, `check`, `demo`, `manifests` and the configuration
//! reference. They use the library; the data path never uses them.

pub mod certs;
pub mod check;
pub mod client;
pub mod demo;
pub mod manifests;
pub mod reference;
