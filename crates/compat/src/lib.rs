//! The breakage study (`asyncbis-compat`): runs third-party asyncio test suites on stock asyncio
//! and under asyncbis, attributes each new failure to a behaviour switch, and writes a report.

pub mod analysis;
pub mod cache;
pub mod manifest;
pub mod results;
pub mod signature;

/// Entry point shared by the console script and the standalone binary.
pub fn main_with_args(args: Vec<String>) -> i32 {
    let _ = args;
    eprintln!("asyncbis-compat: not implemented yet");
    2
}
