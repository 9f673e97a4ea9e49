//! As TechEmpower's `src/ser.rs`: the response types and the JSON serializer the features pick
//! (`perf-json`: sonic-rs, `json`: serde_json). TechEmpower expands the `Serialize` derives by
//! hand to save compile time; the output is the same.

use serde::Serialize;

#[cfg(feature = "perf-json")]
pub use sonic_rs::to_vec as json_serialize;

#[cfg(all(feature = "json", not(feature = "perf-json")))]
pub use serde_json::to_vec as json_serialize;

#[cfg(not(any(feature = "json", feature = "perf-json")))]
compile_error!("enable the `perf-json` (sonic-rs) or `json` (serde_json) feature");

/// A row of `records`, its strings borrowed from the row (zero-copy).
#[derive(Serialize)]
pub struct Record<'a> {
    pub id: i32,
    pub email: &'a str,
    pub text: Option<&'a str>,
}

#[derive(Serialize)]
pub struct Detail<'a> {
    pub detail: &'a str,
}
