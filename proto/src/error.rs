//! The one error type of the wire layer, worded for the person who will read it.

/// Everything that can go wrong while encoding, decoding or running a handshake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer announced a control message larger than the limit.
    #[error("control message of {len} bytes exceeds the {max} byte limit")]
    MessageTooLarge {
        /// The announced length.
        len: usize,
        /// The limit ([`MAX_MESSAGE_LEN`](crate::message::MAX_MESSAGE_LEN)).
        max: usize,
    },
    /// The bytes do not form a valid control message.
    #[error("malformed control message: {0}")]
    Malformed(&'static str),
    /// The control message type byte is not one this version knows.
    #[error("unknown control message type {0:#04x}")]
    UnknownMessage(u8),
    /// A host id string could not be parsed.
    #[error("invalid host id: {0}")]
    InvalidHostId(&'static str),
    /// A key file or key string could not be parsed.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A certificate pin string could not be parsed.
    #[error("invalid certificate pin: {0} (expected `sha256:` followed by 52 base32 characters, or `webpki`)")]
    InvalidPin(&'static str),
    /// An address is not of the `name:port` form (relay addresses, forward targets).
    #[error("invalid address: {0}")]
    InvalidAddress(&'static str),
    /// A ticket string could not be parsed.
    #[error("invalid ticket: {0}")]
    InvalidTicket(&'static str),
    /// The host's Noise answer could not be decrypted: the ticket is not the host's.
    #[error(
        "the host refused the session: the ticket's secret is wrong or the host key changed (ask the host owner for a new ticket)"
    )]
    HostRejected,
    /// The client's handshake did not verify against this host's key.
    #[error("the client's handshake does not match this host's key")]
    ClientRejected,
    /// The client's first handshake message decrypted, but its payload is malformed.
    #[error("the client's first handshake message is malformed: {0}")]
    BadHello(&'static str),
    /// The host has no service of the name the ticket asks for.
    #[error(
        "the host has no {}; ask its owner for a ticket for one of its services",
        service.as_deref().map_or_else(|| "default service".to_owned(), |name| format!("service `{name}`"))
    )]
    NoSuchService {
        /// The service the ticket names (`None`: a ticket for the default service).
        service: Option<String>,
    },
    /// The host turned the session away with a reason this version does not know.
    #[error("the host refused the session (reason {code}; a newer ferry may explain it)")]
    HostRefusedCode {
        /// The refusal byte of the host's answer.
        code: u8,
    },
    /// A registration proof did not verify.
    #[error("the registration proof is invalid: {0}")]
    BadProof(&'static str),
    /// A peer sent a control message that does not belong at this point of the conversation.
    #[error("the peer sent {got} where {expected} belongs (a broken or incompatible peer)")]
    Unexpected {
        /// What the conversation waited for.
        expected: &'static str,
        /// What arrived.
        got: &'static str,
    },
    /// A record failed authentication: the stream was cut, corrupted or tampered with.
    #[error("an end-to-end record failed authentication: the stream was corrupted or tampered with")]
    RecordAuth,
    /// A record announced a size or kind this version does not allow.
    #[error("malformed end-to-end record: {0}")]
    BadRecord(&'static str),
    /// A resume request (or the host's answer to one) was refused; the live session is
    /// untouched.
    #[error("the session could not be resumed: {why}")]
    ResumeRefused {
        /// What was wrong with the request or answer.
        why: ResumeRefusal,
    },
    /// A record was to be sealed while the replay buffer is full: wait for an acknowledgement.
    #[error("the replay buffer is full; wait for the peer's acknowledgement")]
    ReplayFull,
    /// The Noise library refused an operation (a bug or a misuse, never peer-controlled).
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
}

/// Why a resume was refused (the request checked by the host, or the answer by the client).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ResumeRefusal {
    /// The request is not `RESUME_REQUEST_LEN` bytes, or the answer not `RESUME_ANSWER_LEN`.
    Malformed,
    /// The host knows no live session of this id (ended, timed out, or never resumable).
    UnknownSession,
    /// The MAC does not verify: made without the resumption secret.
    BadMac,
    /// The attempt number is not above the last one taken: a replayed request.
    StaleAttempt,
    /// The counters name records the other end never sent or has already let go of.
    BadCounters,
    /// The host answered with a refusal.
    Refused,
}

impl std::fmt::Display for ResumeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the message has the wrong length",
            Self::UnknownSession => "the host knows no live session of that id",
            Self::BadMac => "it was not made with the session's resumption secret",
            Self::StaleAttempt => "its attempt number was already used (a replay)",
            Self::BadCounters => "its record counters do not fit the session",
            Self::Refused => "the host refused it",
        })
    }
}
