//! The clock type of this crate's API.
//!
//! The core never reads a clock itself: every call that needs the time takes
//! `now`. Natively that is [`std::time::Instant`]; in a browser
//! (`wasm32-unknown-unknown`), where `std::time::Instant::now` panics, it is
//! `web_time::Instant`, which reads `performance.now()`. A shell gets its
//! instants from `Instant::now()` of this type and works on both.

#[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
pub use std::time::Instant;
#[cfg(all(target_family = "wasm", target_os = "unknown"))]
pub use web_time::Instant;
