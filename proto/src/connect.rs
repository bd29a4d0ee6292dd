//! The connect conversation, every side, as state machines.
//!
//! ```text
//! client                      relay                              host
//!  Connect { host_id } ->            the relay decides: draining? host here? under its
//!  [IK msg 1, forwarded]             limit? room in the buffer budget? then opens the
//!                                    host's side of the session:
//!                                      QUIC host: a new stream  Incoming { session } -> host
//!                                      TCP host:  Incoming { session } on its control
//!                                                 stream; the host dials back with
//!                                                 <- Attach { session }
//!                   <- Accepted      (or Refused { reason })
//!  ...from here the stream is opaque end-to-end bytes to the relay...
//! ```
//!
//! The client may send its end-to-end handshake right behind `Connect`, saving a round trip;
//! the relay forwards whatever followed `Connect` to the host first. These types hold only the
//! message-level rules: a relay accepts a `Connect` at most once ([`RelayConnect`] is consumed
//! by its answer; a refusal is `Message::Refused`, sent by the relay's one refusal path), and a
//! client accepts nothing but `Accepted` or `Refused`.

use crate::registration::unexpected;
use crate::{Error, HostId, Message, RefuseReason};

/// How the relay answered a client's `Connect`.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectEvent {
    /// The stream now leads to the host: the end-to-end handshake continues on it.
    Accepted,
    /// The relay turned the session away; the stream ends.
    Refused(RefuseReason),
    /// The host is at another node of the relay's fleet, at this address: dial it (with the
    /// same trust) and start again there. The stream ends.
    Redirected(String),
}

/// The client's side: asks for a host, then waits for the one answer.
#[derive(Debug)]
pub struct ClientConnect {
    answered: bool,
}

impl ClientConnect {
    /// Starts a session to `host_id`; returns the `Connect` message to send first.
    pub fn start(host_id: HostId) -> (Self, Message) {
        (Self { answered: false }, Message::Connect { host_id })
    }

    /// Takes the relay's answer. Only one answer is ever taken; anything else is
    /// [`Error::Unexpected`].
    pub fn handle(&mut self, message: Message) -> Result<ConnectEvent, Error> {
        if self.answered {
            return Err(unexpected("nothing (the relay has answered)", &message));
        }
        self.answered = true;
        match message {
            Message::Accepted => Ok(ConnectEvent::Accepted),
            Message::Refused { reason } => Ok(ConnectEvent::Refused(reason)),
            Message::Redirect { node } => Ok(ConnectEvent::Redirected(node)),
            other => Err(unexpected("Accepted, Refused or Redirect", &other)),
        }
    }
}

/// The relay's side of one client's `Connect`: decide, then answer once.
#[derive(Debug)]
pub struct RelayConnect {
    host_id: HostId,
}

impl RelayConnect {
    /// A stream that began with `Connect { host_id }`.
    pub fn new(host_id: HostId) -> Self {
        Self { host_id }
    }

    /// The host the client asks for.
    pub fn host_id(&self) -> &HostId {
        &self.host_id
    }

    /// The host's side is open: the message that tells the client so.
    pub fn accept(self) -> Message {
        Message::Accepted
    }

    /// The host is registered at another node of this relay's fleet, reached at `node`.
    pub fn redirect(self, node: String) -> Message {
        Message::Redirect { node }
    }
}

/// The relay's first words on a new session stream to a QUIC host.
pub fn announce(session: u64) -> Message {
    Message::Incoming { session }
}

/// The host's check of a session stream a QUIC relay opened: it must begin with
/// `Incoming`. Returns the relay's session number.
pub fn host_stream_opened(first: Message) -> Result<u64, Error> {
    match first {
        Message::Incoming { session } => Ok(session),
        other => Err(unexpected("Incoming", &other)),
    }
}

/// The first message of a TCP host's dial-back connection for `session`.
pub fn attach(session: u64) -> Message {
    Message::Attach { session }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PublicKey;

    const HOST: PublicKey = PublicKey([5; 32]);

    fn every_message() -> Vec<Message> {
        vec![
            Message::Register { host_id: HOST, token: None, handshake: vec![1] },
            Message::Challenge { handshake: vec![2] },
            Message::Proof { handshake: vec![3] },
            Message::Registered,
            Message::Connect { host_id: HOST },
            Message::Accepted,
            Message::Refused { reason: RefuseReason::UnknownHost },
            Message::Incoming { session: 3 },
            Message::GoingAway,
            Message::Attach { session: 3 },
            Message::Redirect { node: "relay-2.example:4433".into() },
            Message::Forward { host_id: HOST, proof: [7; 32] },
        ]
    }

    #[test]
    fn accepted_session() {
        let (mut client, connect) = ClientConnect::start(HOST);
        let Message::Connect { host_id } = connect else { panic!("not a Connect") };
        let relay = RelayConnect::new(host_id);
        assert_eq!(relay.host_id(), &HOST);
        // The relay opens the host's side first: QUIC announce, or TCP attach.
        assert_eq!(host_stream_opened(announce(77)).unwrap(), 77);
        assert_eq!(attach(77), Message::Attach { session: 77 });
        assert_eq!(client.handle(relay.accept()).unwrap(), ConnectEvent::Accepted);
    }

    #[test]
    fn a_redirect_reaches_the_client() {
        let (mut client, connect) = ClientConnect::start(HOST);
        let Message::Connect { host_id } = connect else { panic!("not a Connect") };
        let answer = RelayConnect::new(host_id).redirect("relay-2.example:4433".into());
        let event = client.handle(answer).unwrap();
        assert_eq!(event, ConnectEvent::Redirected("relay-2.example:4433".into()));
    }

    #[test]
    fn each_refusal_reaches_the_client() {
        for reason in [
            RefuseReason::UnknownHost,
            RefuseReason::HostOverLimit,
            RefuseReason::RelayBusy,
            RefuseReason::ShuttingDown,
            RefuseReason::FleetUnavailable,
            RefuseReason::QuotaExceeded,
            RefuseReason::NotAllowed,
            RefuseReason::Other(99),
        ] {
            let (mut client, _) = ClientConnect::start(HOST);
            assert_eq!(client.handle(Message::Refused { reason }).unwrap(), ConnectEvent::Refused(reason));
        }
    }

    #[test]
    fn every_out_of_order_message_is_an_error() {
        for message in every_message() {
            let name = message.name();
            let (mut client, _) = ClientConnect::start(HOST);
            let outcome = client.handle(message.clone());
            match name {
                "Accepted" | "Refused" | "Redirect" => assert!(outcome.is_ok()),
                _ => assert!(
                    matches!(outcome, Err(Error::Unexpected { expected: "Accepted, Refused or Redirect", got }) if got == name),
                    "{name}"
                ),
            }
            // One answer only: a second one is unexpected whatever it is.
            assert!(matches!(client.handle(Message::Accepted), Err(Error::Unexpected { .. })));
            if name != "Incoming" {
                assert!(host_stream_opened(message).is_err(), "{name} opening a host stream");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_answers_never_panic(codes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6)) {
            let (mut client, _) = ClientConnect::start(HOST);
            let mut answered = 0;
            for code in codes {
                let message = every_message().swap_remove(usize::from(code) % 12);
                if client.handle(message).is_ok() {
                    answered += 1;
                }
            }
            proptest::prop_assert!(answered <= 1);
        }
    }
}
