//! A QUIC connection's receive window that grows and shrinks with the sessions it carries.
//!
//! QUIC has flow control at two levels: each stream has a receive window, and the
//! connection has one that all its streams share. Bytes that arrived but were not read yet
//! count against both. A stream whose reader stopped (a paused video player, a client
//! whose app is not reading) keeps up to its stream window unread, for as long as it
//! stays stalled. With a fixed connection window of N stream windows, N stalled streams
//! use all of it and every other stream of the connection freezes: seen on the relay with
//! a host connection whose window was 16 stream windows, where 17 paused viewers froze the
//! host's other sessions and new sessions to it were reset.
//!
//! So where one connection carries the sessions of many people (the relay's connection to
//! a host) its window is **one stream window per session it carries, plus one** for the
//! streams that are not sessions yet (first messages, a host's control stream). A stalled
//! stream can hold at most its own share, never another's: no set of stalled streams can
//! exhaust the window for the rest. The memory this lets peers fill is the sessions'
//! stream windows, which is what the relay's buffer budget reserves for each session
//! before it takes its [`WindowShare`]s.
//!
//! **Plus an eighth.** quinn announces new connection credit (MAX_DATA) only once the
//! bytes read since the last announcement reach an eighth of the window
//! (`add_read_credits` in quinn-proto). With stalled streams holding all but less than
//! an eighth, the streams still moving read it all, the eighth is never reached, no credit
//! is announced, and they freeze too: seen with 45 stalled sessions in a window of 48
//! stream windows. So the window is the shares above times 8/7 (as `crate::credit` does
//! for stream counts): what stalled streams can hold stays at most 7/8 of it, and the
//! sessions still moving always have a whole share of credit between them on top of the
//! eighth quinn holds back.
//!
//! Hosts and clients do not need this: every stream on their connections is one of their
//! own sessions, bounded by their own stream limits, so their connection window is not
//! limited at all (`TransportSettings::connection_window` `None`, quinn's default).

use std::sync::{Arc, Mutex, PoisonError};

use quinn::VarInt;

/// A QUIC connection and the number of sessions whose stream windows its receive window
/// holds.
pub struct ConnectionWindow {
    connection: quinn::Connection,
    stream_window: u64,
    /// Sessions holding a share. Under a lock, not an atomic: the window set must match
    /// the count, so a change and its `set_receive_window` happen as one step.
    sessions: Mutex<u64>,
}

/// One session's share of a connection's receive window; given back when dropped.
pub struct WindowShare(Arc<ConnectionWindow>);

impl ConnectionWindow {
    /// Wraps `connection`, whose receive window becomes one `stream_window` (the room for
    /// streams that are not sessions yet, and quinn's eighth) until sessions take theirs.
    pub fn new(connection: quinn::Connection, stream_window: u64) -> Arc<Self> {
        let window = Arc::new(Self { connection, stream_window, sessions: Mutex::new(0) });
        window.apply(0);
        window
    }

    /// The connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Widens the window by one stream window (and its eighth) for a session, until the
    /// share is dropped.
    pub fn share(self: &Arc<Self>) -> WindowShare {
        self.change(|n| n.saturating_add(1));
        WindowShare(self.clone())
    }

    fn change(&self, f: impl FnOnce(u64) -> u64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        *sessions = f(*sessions);
        self.apply(*sessions);
    }

    fn apply(&self, sessions: u64) {
        let shares = self.stream_window.saturating_mul(sessions.saturating_add(1));
        let bytes = shares.saturating_add(shares.div_ceil(7));
        // Past QUIC's largest value the window is simply unlimited.
        self.connection.set_receive_window(VarInt::from_u64(bytes).unwrap_or(VarInt::MAX));
    }
}

impl Drop for WindowShare {
    fn drop(&mut self) {
        // quinn shrinks lazily: credit already granted stays, new credit waits until the
        // bytes in flight have been read.
        self.0.change(|n| n.saturating_sub(1));
    }
}
