//! The one integration-test binary: runs the real `ingest` binary against the real simulator
//! over loopback, into real lakes in temp dirs, and asserts on the data landed.
mod common;
mod declared;
mod exactly_once;
mod faults;
mod hostile;
mod import;
mod input;
mod pipeline_fuzz;
mod pull_c2s;
mod pull_pancake;
mod push;
mod push_faults;
mod runs;
mod s3;
mod serve;
mod transform;
mod transform_traps;
mod zoho;
