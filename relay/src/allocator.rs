//! Giving freed heap back to the system once sessions have closed.
//!
//! glibc's malloc keeps memory that a burst of sessions freed as holes inside its
//! arenas; only the top of each arena is returned on its own. Measured with the soak
//! harness: 7.3 MiB idle, 26 MiB after 2,000 sessions opened and all closed, 13 MiB once
//! `malloc_trim(0)` ran (it walks every arena and `madvise`s whole free pages away).
//! mimalloc instead of glibc was worse (19 MiB idle, 51 MiB after). So the relay trims
//! once sessions and connections have stopped coming and going for a moment: never in the
//! middle of a burst, where the walk would briefly lock arenas that busy threads need, and
//! at most once per quiet period. Connections count as much as sessions: a flood of
//! connections that open no session (issue 13: 1,000 idle QUIC connections, ~100 KiB
//! each) frees as much heap when it ends as a burst of sessions, and watching sessions
//! alone left 62 MB resident after one until some session came or went.
//!
//! Trimming leaves behind free memory on pages that still hold a live chunk. Most of
//! those "islands" after a burst are chunks parked in glibc's per-thread cache (tcache:
//! up to 7 freed chunks per size class per thread, which look in use to the allocator).
//! They differ from burst to burst, so the idle footprint wandered by ±10% from one
//! burst to the next (soak, after a warm-up wave: 1.08–1.10× the warm baseline; with the
//! cache off, 1.03× twice, at the same session rate). glibc reads that setting only
//! from `GLIBC_TUNABLES` at process start, so the relay binary restarts itself with it
//! set once, before any thread exists ([`reexec_with_tunables`]), unless the operator
//! set `GLIBC_TUNABLES` themselves.
//!
//! This is the relay's one `unsafe` block: a foreign call with no arguments to uphold.

use std::time::Duration;

use tokio::sync::watch;

/// The glibc tunables the relay runs with: no per-thread cache of freed chunks.
pub const TUNABLES: &str = "glibc.malloc.tcache_count=0";

/// On glibc, replaces this process with itself (same pid, arguments and files) with
/// `GLIBC_TUNABLES` set to [`TUNABLES`], if `GLIBC_TUNABLES` is not set. Returns when it
/// did nothing: the variable was set (by the operator, or by the first run), another C
/// library, or the `exec` failed (the relay then runs with glibc's defaults). Call it first
/// in `main`, before any thread starts.
pub fn reexec_with_tunables() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let mut args = std::env::args_os();
        let Some(arg0) = args.next() else { return };
        // Only returns on failure; the relay then simply runs as it is.
        let _ =
            std::process::Command::new("/proc/self/exe").arg0(arg0).args(args).env("GLIBC_TUNABLES", TUNABLES).exec();
    }
}

/// How long the session and connection counts must stay unchanged before the heap is
/// trimmed.
pub const QUIET_BEFORE_TRIM: Duration = Duration::from_secs(2);

/// Asks the allocator to return free pages to the system; `true` if it released any.
/// A no-op returning `false` where the C library is not glibc.
pub fn release_free_memory() -> bool {
    trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "glibc's malloc_trim has no safe binding")]
fn trim() -> bool {
    // SAFETY: malloc_trim only takes the arenas' own locks; it has no preconditions, and
    // 0 asks it to keep no spare room at the top of the heap.
    unsafe { libc::malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

/// How long after a trim the heap is trimmed once more if the counts stayed put: a closed
/// QUIC connection's state is freed only when its draining period ends (three probe
/// timeouts after the close, which on a busy relay or a slow path can come after the quiet
/// period), so one trim right after the last close can miss part of a flood's memory.
/// Measured with the connection-flood test in `tests/hostile_connections.rs` (1,000 idle
/// QUIC connections, baseline 9.5 MiB, a shared 2-core machine): in two runs of six the
/// first trim left up to 25 MiB; the second brought it to 14 MiB, as one trim does in the
/// other runs.
pub const TRIM_AGAIN_AFTER: Duration = Duration::from_secs(10);

/// Runs until `sessions` or `connections` closes: after the running-session count or the
/// open-connection count has changed and then both stayed put for [`QUIET_BEFORE_TRIM`],
/// trims the heap (on a blocking thread: the walk takes milliseconds on a large heap), and
/// once more [`TRIM_AGAIN_AFTER`] later if they are still put.
pub async fn trim_when_quiet(mut sessions: watch::Receiver<usize>, mut connections: watch::Receiver<usize>) {
    loop {
        if either_changed(&mut sessions, &mut connections).await.is_err() {
            return;
        }
        loop {
            // Wait out the burst: every further change restarts the quiet period.
            loop {
                match tokio::time::timeout(QUIET_BEFORE_TRIM, either_changed(&mut sessions, &mut connections)).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return,
                    Err(_) => break,
                }
            }
            trim_now().await;
            match tokio::time::timeout(TRIM_AGAIN_AFTER, either_changed(&mut sessions, &mut connections)).await {
                Err(_) => {
                    trim_now().await;
                    break;
                }
                // A new burst began: wait it out as the last one.
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
            }
        }
    }
}

/// Waits for a change in either count; an error once either sender is gone.
async fn either_changed(
    sessions: &mut watch::Receiver<usize>,
    connections: &mut watch::Receiver<usize>,
) -> Result<(), watch::error::RecvError> {
    tokio::select! {
        changed = sessions.changed() => changed,
        changed = connections.changed() => changed,
    }
}

/// Trims on a blocking thread and says whether it released anything.
async fn trim_now() {
    let released = tokio::task::spawn_blocking(release_free_memory).await.unwrap_or(false);
    tracing::debug!(released, "returned free heap pages to the system");
}
