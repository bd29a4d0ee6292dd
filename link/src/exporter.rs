//! The TLS exporter value of a hop, read the same way over QUIC and over TLS.
//!
//! A host's registration proof carries this value in its Noise prologue, so a proof made
//! on one connection does not verify on another (`ferry_proto::proof`). Both
//! ends must derive it identically: same label ([`REGISTRATION_EXPORTER_LABEL`]), an
//! empty context, [`EXPORTER_LEN`] bytes. QUIC and rustls spell "empty context"
//! differently (`b""` against `Some(b"")`; `None` would be a different value), which is
//! the reason this lives in one place.

use ferry_proto::{EXPORTER_LEN, REGISTRATION_EXPORTER_LABEL};

use crate::{LinkError, TlsStream};

/// The registration exporter value of a QUIC connection.
pub fn quic(conn: &quinn::Connection) -> Result<[u8; EXPORTER_LEN], LinkError> {
    let mut exporter = [0u8; EXPORTER_LEN];
    // quinn's error says only that the length was refused; there is no cause to keep.
    conn.export_keying_material(&mut exporter, REGISTRATION_EXPORTER_LABEL, b"")
        .map_err(|_| LinkError::Exporter(None))?;
    Ok(exporter)
}

/// The registration exporter value of a TLS connection (either side).
pub fn tls(tls: &TlsStream) -> Result<[u8; EXPORTER_LEN], LinkError> {
    let mut exporter = [0u8; EXPORTER_LEN];
    let context = Some(&b""[..]);
    let exported = match tls {
        TlsStream::Client(c) => {
            c.get_ref().1.export_keying_material(&mut exporter, REGISTRATION_EXPORTER_LABEL, context)
        }
        TlsStream::Server(s) => {
            s.get_ref().1.export_keying_material(&mut exporter, REGISTRATION_EXPORTER_LABEL, context)
        }
    };
    exported.map_err(|e| LinkError::Exporter(Some(Box::new(e))))?;
    Ok(exporter)
}
