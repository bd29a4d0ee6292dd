//! The `ferry` command's helpers, kept out of `main.rs` so it stays a list of commands:
//! flag values checked as they are parsed ([`args`]), the host's config file and how it
//! combines with flags ([`host_file`]), QR codes that scan on any terminal
//! ([`qr`]), readiness waits for scripts ([`wait`]), `ferry cat`'s progress
//! ([`progress`]) and `ferry demo`'s relay process ([`demo`]).

pub mod args;
pub mod demo;
pub mod host_file;
pub mod progress;
pub mod qr;
pub mod wait;
