//! Byte quotas on a relay of its own (issue 16): usage counted in the relay's memory per
//! registration token, the session that crosses the quota ended (or, with
//! `over_quota_rate`, paced down), the next one refused `quota exceeded` as `ferry cat`
//! prints it, a host registering with the spent token refused too, and `ferry-relay usage`
//! reading the exact total from the admin port. A real `ferry-relay` process; the fleet's
//! quotas on Redis are tests/fleet.rs's.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::process::RelayProcess;
use common::quota::{ferry_cat, logged_bytes, usage_of};
use common::{echo_over, pattern, ticket};
use ferry::local::{echo_service, wait_registered};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity};
use ferry_proto::{RelayAddr, StaticKey};

/// Bytes each way of a session that carries 1.2 MiB in all.
const HALF_OF_1_2_MIB: usize = 629_146;

/// A relay (no fleet) whose token `team` has 2 MiB a day and whose token `slow` has
/// 256 KiB a day, then 2 Mbit/s.
fn config(dir: &Path) -> String {
    let hash =
        |token: &str| ferry_relay::policy::hash_token(token).iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {dir:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nconnections_per_minute_per_source = 0\n[log]\nlevel = \"info\"\n\
         [access]\nmode = \"closed\"\n\
         [[access.token]]\nname = \"team\"\nsha256 = \"{}\"\ntier = \"metered\"\n\
         [[access.token]]\nname = \"slow\"\nsha256 = \"{}\"\ntier = \"slowed\"\n\
         [[tier]]\nname = \"metered\"\nrate = \"unlimited\"\nquota = \"2 MiB/day\"\n\
         [[tier]]\nname = \"slowed\"\nrate = \"unlimited\"\nburst_bytes = 65536\nquota = \"256 KiB/day\"\n\
         over_quota_rate = \"2 Mbit/s\"\n",
        hash("team-token"),
        hash("slow-token")
    )
}

/// A host in front of `service` registered at `relays` with `token`.
async fn host_with(token: &str, relays: Vec<RelayAddr>, service: std::net::SocketAddr) -> Result<(Host, HostIdentity)> {
    let identity = HostIdentity::generate()?;
    let mut config = HostConfig::new(identity.clone(), relays, service.to_string());
    config.token = Some(token.to_owned());
    let host = Host::spawn(config);
    wait_registered(&host, 1).await?;
    Ok((host, identity))
}

/// A 2 MiB/day quota on one relay: 1.2 MiB, then a session that crosses the quota and is
/// ended (the client says why), then refusals for sessions and registrations, and
/// `ferry-relay usage` with the exact total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_quota_ends_the_crossing_session_and_refuses_the_next() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let text = config(dir.path());
    let mut relay = RelayProcess::start(&text, dir.path(), &[]).await?;
    let relays = relay.relays(relay.pin);
    let (service, _echo) = echo_service().await?;
    let (host, identity) = host_with("team-token", relays.clone(), service).await?;

    let client = Client::new(ticket(&identity, relays.clone()), StaticKey::generate()?, HopOptions::client());
    let data = pattern(1, HALF_OF_1_2_MIB);
    let back = echo_over(client.open_session().await?, &data).await?;
    ensure!(back == data, "the first 1.2 MiB came back altered");
    let first = logged_bytes(&mut relay, 1).await?;
    ensure!(first >= 2 * HALF_OF_1_2_MIB as u64, "the relay counted {first} bytes");

    // The second 1.2 MiB crosses 2 MiB: the relay ends it, and `ferry cat` says why.
    let (ok, echoed, stderr) = ferry_cat(&identity, relays.clone(), &pattern(2, HALF_OF_1_2_MIB)).await?;
    ensure!(!ok && echoed.len() < HALF_OF_1_2_MIB, "the crossing session carried on ({} bytes back)", echoed.len());
    ensure!(stderr.contains("quota exceeded"), "ferry cat said: {stderr}");
    let total = first + logged_bytes(&mut relay, 1).await?;
    ensure!(total > 2 << 20, "the session ended before the quota was spent: {total} bytes");

    // The next session is refused, and the client prints the reason.
    let (ok, _, stderr) = ferry_cat(&identity, relays.clone(), b"hello").await?;
    ensure!(!ok && stderr.contains("the relay refused: quota exceeded"), "ferry cat said: {stderr}");
    // So is a host registering with the spent token: it hears why.
    let mut late = HostConfig::new(HostIdentity::generate()?, relays.clone(), service.to_string());
    late.token = Some("team-token".into());
    let late = Host::spawn(late);
    let mut status = late.status();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.last_error.as_deref().is_some_and(|e| e.contains("quota exceeded"))),
    )
    .await;
    ensure!(refused.is_ok(), "the late host's status: {:?}", late.status().borrow());

    // `ferry-relay usage` reads the running relay: exactly what its sessions carried.
    let admin = relay.admin.clone().context("no admin listener")?;
    let config_path = dir.path().join("relay.toml");
    let args = ["--config", config_path.to_str().context("path")?, "--admin", &admin];
    let (used, report) = usage_of(&args, "team").await?;
    eprintln!("{report}");
    ensure!(used == total, "usage says {used} bytes, the sessions carried {total}");
    ensure!(report.contains("in the running relay only"), "{report}");
    host.shutdown().await;
    Ok(())
}

/// With `over_quota_rate`, the session that crosses the quota is not ended but paced down:
/// its bytes arrive intact, at that rate; the next session is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_session_is_paced_down_to_the_over_quota_rate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = RelayProcess::start(&config(dir.path()), dir.path(), &[]).await?;
    let relays = relay.relays(relay.pin);
    let (service, _echo) = echo_service().await?;
    let (host, identity) = host_with("slow-token", relays.clone(), service).await?;
    let client = Client::new(ticket(&identity, relays), StaticKey::generate()?, HopOptions::client());

    // 512 KiB each way: 256 KiB pass at full speed, the rest at 2 Mbit/s (250 kB/s) each
    // way, less one 64 KiB burst: at least 0.7 s, where loopback takes milliseconds.
    let data = pattern(3, 512 << 10);
    let started = Instant::now();
    let back = echo_over(client.open_session().await?, &data).await?;
    let took = started.elapsed();
    ensure!(back == data, "the paced session's bytes were altered");
    ensure!(took >= Duration::from_millis(700), "the session over quota was not paced: {took:?}");
    eprintln!("512 KiB each way, over quota after 256 KiB in all: {took:?}");
    let refused = client.open_session().await.err().context("a session after the quota was spent")?;
    ensure!(refused.to_string().contains("quota exceeded"), "{refused}");
    host.shutdown().await;
    Ok(())
}
