//! A child process the bench owns: killed when its guard drops, with its whole process
//! group if it leads one (socat forks one process per connection), so no forwarder
//! outlives a run that ended early.

use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::process::Child;

/// A child process that is killed, with its whole process group, when dropped.
pub struct Proc {
    pub child: Child,
    /// For messages: "socat", "rathole server".
    pub name: &'static str,
    /// The child leads its own process group (socat forks one process per connection).
    pub group: bool,
}

impl Proc {
    /// A child that does not lead a process group.
    pub fn new(child: Child, name: &'static str) -> Self {
        Self { child, name, group: false }
    }

    /// Its pid, or an error if it has exited (and been reaped).
    pub fn pid(&self) -> Result<u32> {
        self.child.id().with_context(|| format!("{} has exited", self.name))
    }

    /// An error naming the process and its exit status if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            if self.group {
                // Only the group this harness created for the child.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = self.child.start_kill();
        }
    }
}
