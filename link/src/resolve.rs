//! Turning a relay address from a ticket or a flag (`name:port`, `[v6]:port`) into the
//! socket address to dial, and the TLS server name to dial it by.
//!
//! The first address the resolver returns is used, as before for both transports, so
//! QUIC and TCP dial the same machine and the transport race compares like with like.

use std::net::SocketAddr;

use crate::LinkError;

/// The TLS server name of `addr` (`name:port`, `[v6]:port`): its host part.
pub fn server_name(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The address to dial for `addr` (`name:port`).
pub async fn resolve(addr: &str) -> Result<SocketAddr, LinkError> {
    tokio::net::lookup_host(addr).await.map_err(LinkError::Resolve)?.next().ok_or(LinkError::NoAddress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        assert_eq!(server_name("relay.example.org:4433"), "relay.example.org");
        assert_eq!(server_name("127.0.0.1:4433"), "127.0.0.1");
        assert_eq!(server_name("[::1]:4433"), "::1");
    }

    #[tokio::test]
    async fn literal_addresses_resolve_and_nonsense_is_an_error() {
        assert_eq!(resolve("127.0.0.1:4433").await.unwrap(), SocketAddr::from(([127, 0, 0, 1], 4433)));
        assert_eq!(resolve("[::1]:4433").await.unwrap().port(), 4433);
        // No port: the resolver refuses it without asking the network.
        assert!(matches!(resolve("127.0.0.1").await, Err(LinkError::Resolve(_))));
    }
}
