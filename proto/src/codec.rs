//! A small bounds-checked reader used by every decoder in this crate.
//!
//! Decoders never index a slice directly: each read goes through [`Reader`], which
//! returns [`Error::Malformed`] instead of panicking when the input is short.

use std::net::{IpAddr, SocketAddr};

use crate::Error;

/// Reads big-endian integers and fixed-size fields from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(Error::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    /// Takes a big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// Takes a big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// Takes a field prefixed by a u8 length.
    pub fn short_field(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// Takes a field prefixed by a big-endian u16 length.
    pub fn long_field(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    /// Takes an address written by [`put_socket_addr`].
    pub fn socket_addr(&mut self) -> Result<SocketAddr, Error> {
        let ip = match self.u8("address family")? {
            4 => IpAddr::from(self.array::<4>("IPv4 address")?),
            6 => IpAddr::from(self.array::<16>("IPv6 address")?),
            _ => return Err(Error::Malformed("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16("port")?))
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Fails unless every byte was consumed, so trailing garbage is never ignored.
    pub fn finish(self, what: &'static str) -> Result<(), Error> {
        if self.rest.is_empty() { Ok(()) } else { Err(Error::Malformed(what)) }
    }
}

/// Appends an address as `4 | 4 octets | port` or `6 | 16 octets | port` (port big-endian):
/// the relay's `Observed` answer and the hole-punching candidates both carry it.
pub fn put_socket_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Appends `bytes` with a u8 length prefix. The caller guarantees `bytes.len() <= 255`.
pub(crate) fn put_short_field(out: &mut Vec<u8>, bytes: &[u8]) {
    debug_assert!(bytes.len() <= usize::from(u8::MAX));
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Appends `bytes` with a u16 length prefix. The caller guarantees `bytes.len() <= 65535`.
pub(crate) fn put_long_field(out: &mut Vec<u8>, bytes: &[u8]) {
    debug_assert!(bytes.len() <= usize::from(u16::MAX));
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_malformed_not_a_panic() {
        let mut r = Reader::new(&[0, 5, 1, 2]);
        assert!(matches!(r.long_field("x"), Err(Error::Malformed("x"))));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut r = Reader::new(&[1, 2]);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert!(r.finish("b").is_err());
    }
}
