//! Handles own their tasks, on loopback with a real relay: a `Host` dropped without
//! `shutdown()` ends its registration, a cancelled `Session::bridge` returns at once and
//! resets its stream, and `Client::serve` rides out accept failures, stops on cancel and
//! stops for good on a listener that cannot work.

mod common;

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use common::echo_stack;
use ferry::local::wait_registered;
use ferry_client::serve::Accept;
use ferry_client::{Error, Host, HostConfig, HostIdentity};
use rustix::io::Errno;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bound on every wait in this file.
const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_host_stops_its_tasks_and_its_registration_ends() -> Result<()> {
    let s = echo_stack().await?;
    let mut hosts = s.stack.relay.registered_hosts_watch();
    let host =
        Host::spawn(HostConfig::new(HostIdentity::generate()?, s.stack.ticket.relays.clone(), s.service.to_string()));
    wait_registered(&host, 1).await?;
    tokio::time::timeout(LIMIT, hosts.wait_for(|n| *n == 2)).await.context("second host not registered")??;

    let mut status = host.status();
    drop(host);
    // The status channel closes when the last task holding its sender has ended.
    tokio::time::timeout(LIMIT, async { while status.changed().await.is_ok() {} })
        .await
        .context("the dropped host's tasks kept running")?;
    tokio::time::timeout(LIMIT, hosts.wait_for(|n| *n == 1)).await.context("the registration outlived its host")??;
    // The stack's own host is untouched.
    assert!(s.stack.client()?.open_session().await.is_ok());
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_bridge_returns_promptly_and_resets_its_stream() -> Result<()> {
    let s = echo_stack().await?;
    let client = s.stack.client()?;
    let session = client.open_session().await?;
    let (mut app, local) = tokio::io::duplex(64 * 1024);
    let (read, write) = tokio::io::split(local);
    let cancel = CancellationToken::new();
    let bridge = tokio::spawn(session.bridge(read, write, cancel.clone()));
    let mut sessions = s.stack.relay.active_sessions();
    tokio::time::timeout(LIMIT, sessions.wait_for(|n| *n == 1)).await??;

    // A working session, then idle: only the cancel can end it.
    app.write_all(b"ping").await?;
    let mut echo = [0u8; 4];
    tokio::time::timeout(LIMIT, app.read_exact(&mut echo)).await??;
    assert_eq!(&echo, b"ping");
    cancel.cancel();
    let ended =
        tokio::time::timeout(Duration::from_secs(2), bridge).await.context("the bridge ignored its cancel")??;
    assert!(matches!(ended, Err(Error::Cancelled)), "{ended:?}");
    // The relay saw the stream reset and ended its side of the session.
    tokio::time::timeout(LIMIT, sessions.wait_for(|n| *n == 0))
        .await
        .context("the relay session outlived the cancel")??;
    s.stack.shutdown().await;
    Ok(())
}

/// A real listener behind a queue of errors to hand out first.
struct Flaky {
    inner: TcpListener,
    errors: Arc<Mutex<VecDeque<io::Error>>>,
}

impl Accept for Flaky {
    async fn accept(&mut self) -> io::Result<TcpStream> {
        let injected = self.errors.lock().unwrap().pop_front();
        match injected {
            Some(e) => Err(e),
            None => self.inner.accept().await.map(|(stream, _)| stream),
        }
    }
}

async fn flaky(
    errors: impl IntoIterator<Item = i32>,
) -> Result<(Flaky, std::net::SocketAddr, Arc<Mutex<VecDeque<io::Error>>>)> {
    let inner = TcpListener::bind("127.0.0.1:0").await?;
    let addr = inner.local_addr()?;
    let errors = Arc::new(Mutex::new(errors.into_iter().map(io::Error::from_raw_os_error).collect()));
    Ok((Flaky { inner, errors: errors.clone() }, addr, errors))
}

async fn echo_round(stream: &mut TcpStream, bytes: &[u8]) -> Result<()> {
    stream.write_all(bytes).await?;
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut back)).await??;
    assert_eq!(back, bytes);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_rides_out_accept_failures_and_stops_on_cancel() -> Result<()> {
    let s = echo_stack().await?;
    let client = Arc::new(s.stack.client()?);
    // Out of descriptors twice, then a connection aborted before it was taken.
    let (listener, addr, left) =
        flaky([Errno::MFILE.raw_os_error(), Errno::MFILE.raw_os_error(), Errno::CONNABORTED.raw_os_error()]).await?;
    let cancel = CancellationToken::new();
    let serving = tokio::spawn(client.clone().serve(listener, cancel.clone()));

    let mut first = TcpStream::connect(addr).await?;
    echo_round(&mut first, b"after the failures").await?;
    assert!(left.lock().unwrap().is_empty(), "every injected failure was met");
    // And again after another one, with the first session still open.
    left.lock().unwrap().push_back(io::Error::from_raw_os_error(Errno::NFILE.raw_os_error()));
    let mut second = TcpStream::connect(addr).await?;
    echo_round(&mut second, b"and again").await?;
    echo_round(&mut first, b"first still up").await?;

    cancel.cancel();
    let served = tokio::time::timeout(LIMIT, serving).await.context("serve ignored its cancel")??;
    assert!(served.is_ok(), "{served:?}");
    // The sessions ended with it: their local connections are closed.
    for stream in [&mut first, &mut second] {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(LIMIT, stream.read(&mut byte)).await.context("a session outlived serve")?;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_with_the_error_when_the_listener_cannot_work() -> Result<()> {
    let s = echo_stack().await?;
    let (listener, _, _) = flaky([Errno::MFILE.raw_os_error(), Errno::BADF.raw_os_error()]).await?;
    let served = tokio::time::timeout(LIMIT, Arc::new(s.stack.client()?).serve(listener, CancellationToken::new()))
        .await
        .context("serve kept going on a broken listener")?;
    match served {
        Err(Error::Accept(e)) => assert_eq!(e.raw_os_error(), Some(Errno::BADF.raw_os_error())),
        other => panic!("expected the accept error, got {other:?}"),
    }
    s.stack.shutdown().await;
    Ok(())
}
