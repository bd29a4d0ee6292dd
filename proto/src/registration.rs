//! The registration conversation, both sides, as state machines.
//!
//! ```text
//! host                                   relay
//!  Register { host_id, token, XN e }  ->        the relay decides: draining? rules? room?
//!                                     <-  Challenge { XN e, ee }      (or Refused)
//!  Proof { XN s, se }                 ->        checks s == host_id
//!                                     <-  Registered                  (or Refused{BadProof})
//!  ...the control stream stays open...
//!                                     <-  Incoming { session }        (TCP hosts: dial back)
//!                                     <-  GoingAway                   (the relay drains)
//! ```
//!
//! Each side is a value that takes the peer's messages in ([`HostRegistration::handle`],
//! [`RelayRegistration::handle`]) and says what to send or what happened; the async code in
//! the relay and the host only moves the bytes, so every order of messages is decided here
//! once and tested without sockets (see the tests below, which drive both sides against each
//! other). A message that does not belong where it arrives ends the conversation with a clear
//! outcome, never a panic: the host gets [`Error::Unexpected`], the relay answers
//! `Refused { BadProof }`. Once a conversation has ended, every further message is
//! unexpected. The proof's cryptography is in [`crate::proof`].

use crate::message::RegistrationToken;
use crate::proof::{HostProver, RelayVerifier};
use crate::{Error, HostId, Message, RefuseReason, StaticKey};

/// What the host learns from one relay message.
#[derive(Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// Send this message to the relay (the `Proof`).
    Send(Message),
    /// The relay registered the host: sessions may arrive from now on.
    Registered,
    /// The relay refused; the conversation is over.
    Refused(RefuseReason),
    /// A session for a host on TLS over TCP: dial back with `Attach { session }`.
    Incoming {
        /// The relay's session number, for `Attach`.
        session: u64,
    },
    /// The relay is shutting down: register elsewhere; the conversation is over.
    GoingAway,
}

/// The handshake states are boxed: they are 850 bytes and only live for one round trip,
/// while a registered host keeps its conversation for as long as it stays.
enum HostState {
    AwaitChallenge(Box<HostProver>),
    AwaitRegistered,
    Registered,
    Ended,
}

/// The host's side of registration at one relay.
pub struct HostRegistration {
    state: HostState,
}

impl HostRegistration {
    /// Starts registering `key`'s host id on the hop whose TLS exporter value is `exporter`;
    /// returns the `Register` message to send first.
    pub fn start(key: &StaticKey, token: Option<RegistrationToken>, exporter: &[u8]) -> Result<(Self, Message), Error> {
        let (prover, hello) = HostProver::start(key, exporter)?;
        let register = Message::Register { host_id: key.public(), token, handshake: hello };
        Ok((Self { state: HostState::AwaitChallenge(Box::new(prover)) }, register))
    }

    /// Whether the relay has registered the host (and not ended the conversation since).
    pub fn is_registered(&self) -> bool {
        matches!(self.state, HostState::Registered)
    }

    /// Takes one message from the relay.
    pub fn handle(&mut self, message: Message) -> Result<HostEvent, Error> {
        let state = std::mem::replace(&mut self.state, HostState::Ended);
        let expected = match &state {
            HostState::AwaitChallenge(_) => "Challenge",
            HostState::AwaitRegistered => "Registered",
            HostState::Registered => "Incoming or GoingAway",
            HostState::Ended => "nothing (the registration has ended)",
        };
        let (next, event) = match (state, message) {
            (HostState::Ended, message) => return Err(unexpected(expected, &message)),
            (_, Message::Refused { reason }) => (HostState::Ended, HostEvent::Refused(reason)),
            (HostState::AwaitChallenge(prover), Message::Challenge { handshake }) => {
                let proof = prover.answer(&handshake)?;
                (HostState::AwaitRegistered, HostEvent::Send(Message::Proof { handshake: proof }))
            }
            (HostState::AwaitRegistered, Message::Registered) => (HostState::Registered, HostEvent::Registered),
            (HostState::Registered, Message::Incoming { session }) => {
                (HostState::Registered, HostEvent::Incoming { session })
            }
            (HostState::Registered, Message::GoingAway) => (HostState::Ended, HostEvent::GoingAway),
            (_, message) => return Err(unexpected(expected, &message)),
        };
        self.state = next;
        Ok(event)
    }
}

/// What the relay does after one step of a host's registration.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayAction {
    /// Send this message to the host and wait for its next one.
    Send(Message),
    /// The host proved it holds the key of `host_id`: send `Registered` and keep the host
    /// registered for as long as its control stream lives.
    Registered {
        /// The proven host id.
        host_id: HostId,
        /// The message to send (`Registered`).
        reply: Message,
    },
    /// Send `Refused { reason }` and end the stream.
    Refuse(RefuseReason),
    /// The registration is over (the host spoke after its proof, which ends it).
    End,
}

enum RelayState {
    /// `Register` arrived; the relay has not decided yet.
    Deciding {
        exporter: [u8; crate::EXPORTER_LEN],
        hello: Vec<u8>,
    },
    AwaitProof(Box<RelayVerifier>),
    Registered,
    Ended,
}

/// The relay's side of one host's registration.
pub struct RelayRegistration {
    host_id: HostId,
    token: Option<RegistrationToken>,
    state: RelayState,
}

impl RelayRegistration {
    /// A stream that began with `Register { host_id, token, handshake }` on the hop whose TLS
    /// exporter value is `exporter`. The relay then looks at [`Self::host_id`] and
    /// [`Self::token`] and either calls [`Self::admit`] or answers `Refused` and ends the
    /// stream; nothing costly (no Diffie-Hellman) happens before it admits.
    pub fn new(
        host_id: HostId,
        token: Option<RegistrationToken>,
        handshake: Vec<u8>,
        exporter: &[u8; crate::EXPORTER_LEN],
    ) -> Self {
        Self { host_id, token, state: RelayState::Deciding { exporter: *exporter, hello: handshake } }
    }

    /// The host id the host claims (proven only once [`RelayAction::Registered`] says so).
    pub fn host_id(&self) -> &HostId {
        &self.host_id
    }

    /// The registration token the host passed, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.0.as_str())
    }

    /// The relay's rules admit the host: challenge it to prove its key.
    pub fn admit(&mut self) -> RelayAction {
        match std::mem::replace(&mut self.state, RelayState::Ended) {
            RelayState::Deciding { exporter, hello } => match RelayVerifier::start(&exporter, &hello) {
                Ok((verifier, challenge)) => {
                    self.state = RelayState::AwaitProof(Box::new(verifier));
                    RelayAction::Send(Message::Challenge { handshake: challenge })
                }
                Err(_) => RelayAction::Refuse(RefuseReason::BadProof),
            },
            // Admitting twice (a caller bug) cannot register anyone.
            _ => RelayAction::Refuse(RefuseReason::BadProof),
        }
    }

    /// Takes one message from the host.
    pub fn handle(&mut self, message: Message) -> RelayAction {
        match (std::mem::replace(&mut self.state, RelayState::Ended), message) {
            (RelayState::AwaitProof(verifier), Message::Proof { handshake }) => {
                match verifier.verify(&handshake, &self.host_id) {
                    Ok(()) => {
                        self.state = RelayState::Registered;
                        RelayAction::Registered { host_id: self.host_id, reply: Message::Registered }
                    }
                    Err(_) => RelayAction::Refuse(RefuseReason::BadProof),
                }
            }
            // Anything else before the proof: no proof.
            (RelayState::Deciding { .. } | RelayState::AwaitProof(_), _) => RelayAction::Refuse(RefuseReason::BadProof),
            // The host sends nothing after its proof: whatever it says ends the registration.
            (RelayState::Registered | RelayState::Ended, _) => RelayAction::End,
        }
    }

    /// The `Incoming` announcement of a session for a registered TCP host, or `None` if the
    /// host is not (or no longer) registered.
    pub fn incoming(&self, session: u64) -> Option<Message> {
        matches!(self.state, RelayState::Registered).then_some(Message::Incoming { session })
    }

    /// The relay is draining: the `GoingAway` to send; the registration is over.
    pub fn going_away(&mut self) -> Message {
        self.state = RelayState::Ended;
        Message::GoingAway
    }
}

/// The error for `message` arriving where `expected` belongs.
pub(crate) fn unexpected(expected: &'static str, message: &Message) -> Error {
    Error::Unexpected { expected, got: message.name() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOP: [u8; 32] = [7; 32];

    fn relay_for(register: Message, exporter: &[u8; 32]) -> RelayRegistration {
        let Message::Register { host_id, token, handshake } = register else { panic!("not a Register") };
        RelayRegistration::new(host_id, token, handshake, exporter)
    }

    /// Runs both sides against each other until the conversation settles; the relay admits.
    fn converse(host_key: &StaticKey, relay_hop: &[u8; 32]) -> (HostRegistration, RelayRegistration, Vec<String>) {
        let (mut host, register) = HostRegistration::start(host_key, None, &HOP).unwrap();
        let mut relay = relay_for(register, relay_hop);
        let mut log = Vec::new();
        let mut action = relay.admit();
        loop {
            let to_host = match action {
                RelayAction::Send(m) => m,
                RelayAction::Registered { reply, .. } => {
                    log.push("relay: registered".into());
                    reply
                }
                RelayAction::Refuse(reason) => Message::Refused { reason },
                RelayAction::End => break,
            };
            log.push(format!("relay -> host {}", to_host.name()));
            match host.handle(to_host) {
                Ok(HostEvent::Send(m)) => {
                    log.push(format!("host -> relay {}", m.name()));
                    action = relay.handle(m);
                }
                Ok(event) => {
                    log.push(format!("host: {event:?}"));
                    break;
                }
                Err(e) => {
                    log.push(format!("host error: {e}"));
                    break;
                }
            }
        }
        (host, relay, log)
    }

    #[test]
    fn happy_path_registers() {
        let key = StaticKey::generate().unwrap();
        let (host, relay, log) = converse(&key, &HOP);
        assert_eq!(
            log,
            [
                "relay -> host Challenge",
                "host -> relay Proof",
                "relay: registered",
                "relay -> host Registered",
                "host: Registered"
            ]
        );
        assert!(host.is_registered());
        assert_eq!(relay.incoming(9), Some(Message::Incoming { session: 9 }));
    }

    #[test]
    fn registered_host_hears_sessions_and_going_away() {
        let key = StaticKey::generate().unwrap();
        let (mut host, mut relay, _) = converse(&key, &HOP);
        let announce = relay.incoming(42).unwrap();
        assert_eq!(host.handle(announce).unwrap(), HostEvent::Incoming { session: 42 });
        assert_eq!(host.handle(relay.going_away()).unwrap(), HostEvent::GoingAway);
        assert!(!host.is_registered());
        assert_eq!(relay.incoming(43), None, "no sessions after GoingAway");
        assert!(matches!(host.handle(Message::Registered), Err(Error::Unexpected { .. })));
    }

    #[test]
    fn proof_from_another_hop_is_refused() {
        let key = StaticKey::generate().unwrap();
        let (host, _, log) = converse(&key, &[8; 32]);
        assert!(!host.is_registered());
        // The challenge made on the relay's hop does not decrypt on the host's.
        assert!(log.iter().any(|l| l.starts_with("host error")), "{log:?}");
    }

    #[test]
    fn a_thief_is_refused_bad_proof() {
        let victim = StaticKey::generate().unwrap();
        let thief = StaticKey::generate().unwrap();
        let (mut prover, register) = HostRegistration::start(&thief, None, &HOP).unwrap();
        let Message::Register { token, handshake, .. } = register else { unreachable!() };
        let mut relay = RelayRegistration::new(victim.public(), token, handshake, &HOP);
        let RelayAction::Send(challenge) = relay.admit() else { panic!("no challenge") };
        let HostEvent::Send(proof) = prover.handle(challenge).unwrap() else { panic!("no proof") };
        assert_eq!(relay.handle(proof), RelayAction::Refuse(RefuseReason::BadProof));
    }

    #[test]
    fn each_refusal_reaches_the_host() {
        for reason in [
            RefuseReason::NotAllowed,
            RefuseReason::RelayBusy,
            RefuseReason::ShuttingDown,
            RefuseReason::RateLimited,
            RefuseReason::BadProof,
        ] {
            let key = StaticKey::generate().unwrap();
            let token = Some(RegistrationToken("t0ken".into()));
            let (mut host, register) = HostRegistration::start(&key, token, &HOP).unwrap();
            let mut relay = relay_for(register, &HOP);
            assert_eq!(relay.token(), Some("t0ken"));
            assert_eq!(relay.host_id(), &key.public());
            assert_eq!(host.handle(Message::Refused { reason }).unwrap(), HostEvent::Refused(reason));
            assert!(!host.is_registered());
            assert!(matches!(host.handle(Message::Registered), Err(Error::Unexpected { .. })), "refused is final");
            // A relay that did not admit registers nobody, whatever comes next.
            assert_eq!(relay.handle(Message::Proof { handshake: vec![] }), RelayAction::Refuse(RefuseReason::BadProof));
        }
    }

    /// Every message other than the one each step expects.
    fn all_messages() -> Vec<Message> {
        let host_id = StaticKey::from_private([3; 32]).public();
        vec![
            Message::Register { host_id, token: None, handshake: vec![1; 32] },
            Message::Challenge { handshake: vec![2; 48] },
            Message::Proof { handshake: vec![3; 64] },
            Message::Registered,
            Message::Connect { host_id },
            Message::Accepted,
            Message::Incoming { session: 1 },
            Message::GoingAway,
            Message::Attach { session: 1 },
        ]
    }

    #[test]
    fn host_rejects_every_out_of_order_message() {
        let key = StaticKey::generate().unwrap();
        for message in all_messages() {
            let (mut host, _) = HostRegistration::start(&key, None, &HOP).unwrap();
            let name = message.name();
            match host.handle(message) {
                // A Challenge arrives where one belongs but does not verify: a proof error.
                Err(Error::BadProof(_)) if name == "Challenge" => {}
                Err(Error::Unexpected { expected: "Challenge", got }) => assert_eq!(got, name),
                other => panic!("{name} before the challenge: {other:?}"),
            }
            assert!(!host.is_registered());
        }
        // After the proof was sent, only Registered (or a refusal) may come.
        for message in all_messages().into_iter().filter(|m| *m != Message::Registered) {
            let (mut host, register) = HostRegistration::start(&key, None, &HOP).unwrap();
            let mut relay = relay_for(register, &HOP);
            let RelayAction::Send(challenge) = relay.admit() else { panic!() };
            assert!(matches!(host.handle(challenge), Ok(HostEvent::Send(Message::Proof { .. }))));
            let name = message.name();
            assert!(
                matches!(host.handle(message), Err(Error::Unexpected { expected: "Registered", got }) if got == name),
                "{name} in place of Registered"
            );
        }
    }

    #[test]
    fn relay_refuses_every_out_of_order_message() {
        let key = StaticKey::generate().unwrap();
        for message in all_messages() {
            let (_, register) = HostRegistration::start(&key, None, &HOP).unwrap();
            let mut relay = relay_for(register, &HOP);
            let RelayAction::Send(_) = relay.admit() else { panic!() };
            let name = message.name();
            // A Proof with garbage bytes fails too: only a real proof registers.
            assert_eq!(relay.handle(message), RelayAction::Refuse(RefuseReason::BadProof), "{name}");
            assert_eq!(relay.incoming(1), None);
            // Before the relay decided, a message is no proof either.
            let (_, register) = HostRegistration::start(&key, None, &HOP).unwrap();
            let mut undecided = relay_for(register, &HOP);
            assert_eq!(undecided.handle(Message::Registered), RelayAction::Refuse(RefuseReason::BadProof));
        }
    }

    #[test]
    fn garbage_hello_is_refused_on_admit() {
        let host_id = StaticKey::from_private([1; 32]).public();
        let mut relay = RelayRegistration::new(host_id, None, vec![1, 2, 3], &HOP);
        assert_eq!(relay.admit(), RelayAction::Refuse(RefuseReason::BadProof));
        assert_eq!(relay.admit(), RelayAction::Refuse(RefuseReason::BadProof), "admitting twice registers nobody");
    }

    fn any_message() -> impl Strategy<Value = Message> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..120);
        prop_oneof![
            (any::<[u8; 32]>(), bytes()).prop_map(|(h, handshake)| Message::Register {
                host_id: crate::PublicKey(h),
                token: None,
                handshake
            }),
            bytes().prop_map(|handshake| Message::Challenge { handshake }),
            bytes().prop_map(|handshake| Message::Proof { handshake }),
            Just(Message::Registered),
            any::<[u8; 32]>().prop_map(|h| Message::Connect { host_id: crate::PublicKey(h) }),
            Just(Message::Accepted),
            any::<u8>().prop_map(|c| Message::Refused { reason: RefuseReason::Other(c) }),
            any::<u64>().prop_map(|session| Message::Incoming { session }),
            Just(Message::GoingAway),
            any::<u64>().prop_map(|session| Message::Attach { session }),
        ]
    }

    proptest! {
        /// Random messages in random order, to both sides: never a panic, never a
        /// registration without a real proof, and an ended conversation stays ended.
        #[test]
        fn random_conversations_end_clearly(
            to_host in proptest::collection::vec(any_message(), 0..8),
            to_relay in proptest::collection::vec(any_message(), 0..8),
            admit in any::<bool>(),
        ) {
            let key = StaticKey::from_private([9; 32]);
            let (mut host, register) = HostRegistration::start(&key, None, &HOP).unwrap();
            let mut ended = false;
            for m in to_host {
                let outcome = host.handle(m);
                if ended {
                    prop_assert!(outcome.is_err());
                }
                // No Registered can be reached without a Challenge the prover accepted.
                prop_assert!(!matches!(outcome, Ok(HostEvent::Registered)), "registered without a challenge");
                ended |= !matches!(outcome, Ok(HostEvent::Send(_) | HostEvent::Incoming { .. }));
            }
            let mut relay = relay_for(register, &HOP);
            if admit {
                let challenged = matches!(relay.admit(), RelayAction::Send(Message::Challenge { .. }));
                prop_assert!(challenged, "a real Register is challenged");
            }
            for m in to_relay {
                let registered = matches!(relay.handle(m), RelayAction::Registered { .. });
                prop_assert!(!registered, "registered without a proof");
            }
        }
    }
}
