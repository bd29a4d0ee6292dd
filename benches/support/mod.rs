//! What the process-level benches (`e2e`, `soak`) share, one copy each: the target
//! service, the `/proc` readers, child processes killed on drop, the `ferry-relay`
//! process and where the binaries they run come from. The criterion micro benches
//! (`seal`, `control`, `pump`) measure code in memory and need none of it.
//!
//! # Layout
//! - `service`: the TCP service behind every forwarder (upload sink, download source,
//!   echo), selected by the first byte of a connection.
//! - `procfs`: memory, CPU time and open files of a process from `/proc`; this
//!   process's open-file limit.
//! - `process`: a child process that is killed, with its process group, when dropped.
//! - `relay`: the real `ferry-relay` process with limits that measure the relay, not
//!   its abuse protection; its address and pin.
//! - `tools`: the target directory and the binaries run (`ferry-relay`, `socat`,
//!   `rathole`), built or installed when missing.
// Each bench uses its own subset (the soak needs no service modes, socat or rathole).
#![allow(dead_code)]

pub mod process;
pub mod procfs;
pub mod relay;
pub mod service;
pub mod tools;
