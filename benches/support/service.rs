//! The TCP service behind every forwarder, so that all rows of a table carry the same
//! traffic to the same program. The first byte of a connection selects what it does:
//! [`MODE_UPLOAD`] sink, [`MODE_DOWNLOAD`] source, [`MODE_ECHO`] echo.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use ferry::local::Pattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Reads to end of stream, then answers the byte count as a big-endian u64.
pub const MODE_UPLOAD: u8 = b'U';
/// Followed by a big-endian u64: sends that many bytes, then closes.
pub const MODE_DOWNLOAD: u8 = b'D';
/// Echoes everything; closes its write side at end of stream.
pub const MODE_ECHO: u8 = b'E';

/// A TCP service on 127.0.0.1 that does what the first byte of a connection asks:
/// `U` sink (reads to EOF, answers the byte count as u64), `D` + u64 source (sends that
/// many bytes, then closes), `E` echo.
pub async fn service() -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut block = vec![0u8; 256 * 1024];
    Pattern::new(7).fill(&mut block);
    let block: Arc<[u8]> = block.into();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let block = block.clone();
            tokio::spawn(async move {
                let _ = serve_one(stream, &block).await;
            });
        }
    });
    Ok((addr, task))
}

async fn serve_one(stream: TcpStream, block: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let mut mode = [0u8; 1];
    if r.read(&mut mode).await? == 0 {
        return Ok(());
    }
    match mode[0] {
        MODE_UPLOAD => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            w.write_all(&total.to_be_bytes()).await?;
            w.shutdown().await
        }
        MODE_DOWNLOAD => {
            let mut left = r.read_u64().await?;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                w.write_all(&block[..n]).await?;
                left -= n as u64;
            }
            w.shutdown().await?;
            let mut sink = [0u8; 64];
            while r.read(&mut sink).await? > 0 {}
            Ok(())
        }
        MODE_ECHO => {
            tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await
        }
        _ => Ok(()),
    }
}
