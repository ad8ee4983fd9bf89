//! The `ingest` engine: config → pull → lake (raw + state) → status; plus the API simulator.
//! The binary (`main.rs`) only parses arguments and maps errors to exit codes.
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod export;
pub mod json;
pub mod time;
pub mod http;
pub mod import;
pub mod lake;
pub mod pull;
pub mod push;
pub mod query;
pub mod secret;
pub mod serve;
pub mod sim;
pub mod stop;
pub mod status;
pub mod transform;

pub use error::{Error, Result};
