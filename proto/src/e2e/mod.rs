//! The end-to-end layer between a client and a host, which the relay cannot read.
//!
//! - [`handshake`]: Noise `IKpsk2` (the client knows the host key and the ticket secret),
//!   carrying the service the client asks for and the host's yes or no.
//! - [`hybrid`]: the ML-KEM-768 half of the full handshake and the key mix that makes it
//!   hybrid (post-quantum).
//! - [`psk`]: resumed handshakes (`NNpsk0`) keyed by a PSK from an earlier full session, the
//!   host's PSK table, and the first-frame dispatch table.
//! - [`direct`]: the tag in front of a client's first message on the direct path.
//! - [`record`]: the framed, authenticated record stream that follows it.
//! - [`resume`]: acknowledgements, replay buffers and the resume request of resumable
//!   sessions, which move to another path without losing a byte.
//!
//! Handshake messages and records share one framing: a 2-byte big-endian length then that
//! many bytes. See `docs/protocol.md` for the sequence.

pub mod direct;
pub mod handshake;
pub mod hybrid;
pub mod psk;
pub mod record;
pub mod resume;

pub use handshake::{ClientHandshake, E2E_NOISE, Established, HostHandshake, Offer, Refusal};
pub use psk::{FirstFrame, PskTable, ResumptionPsk};
pub use record::{MAX_RECORD_DATA, Opened, Opener, Record, Sealer};
pub use resume::{
    ClientResume, HostResume, Inbound, Outbound, ResumeKeys, ResumeRefusal, ResumeRequest, SessionId, Taken,
};
