//! A path: one way from a client to its host — straight to a direct address of the host,
//! or through one relay. Its own module because sessions, the client and the CLI all name
//! it, and it depends on nothing.

use std::fmt;

/// One way to the host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Straight to the host's direct port at this address.
    Direct(String),
    /// Through the relay at this address (as the ticket lists it).
    Relay(String),
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct(addr) => write!(f, "direct {addr}"),
            Self::Relay(addr) => write!(f, "relay {addr}"),
        }
    }
}
