//! Readings of a process from `/proc`: resident memory (VmRSS, or PSS summed over a
//! forking relay's tree), CPU seconds including reaped children, open files; and this
//! process's open-file limit, which bounds how many idle sessions a TCP forwarder can
//! hold. Linux only, as the benches are.

use std::collections::HashSet;
use std::process::Stdio;

use anyhow::{Context, Result};

/// Reads `/proc/<pid>/stat`: (parent pid, utime+stime+cutime+cstime in ticks).
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // Fields after the command name start at field 3 (state); utime is field 14.
    let ppid = num(1)? as u32;
    let ticks = num(11)? + num(12)? + num(13)? + num(14)?;
    Some((ppid, ticks))
}

/// `pid` and all its live descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut known: HashSet<u32> = tree.iter().copied().collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return tree;
    };
    let all: Vec<(u32, u32)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, proc_stat(p)?.0)))
        .collect();
    loop {
        let before = tree.len();
        for &(p, parent) in &all {
            if known.contains(&parent) && known.insert(p) {
                tree.push(p);
            }
        }
        if tree.len() == before {
            return tree;
        }
    }
}

/// CPU seconds used by `pid` and its descendants (live, and reaped ones via cutime).
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    process_tree(pid).iter().filter_map(|&p| proc_stat(p)).map(|(_, t)| t as f64 / ticks_per_second).sum()
}

/// The value in KiB of the line starting with `field` in `/proc/<pid>/<file>`.
fn status_kib(pid: u32, field: &str, file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:", "status").context("reading VmRSS")
}

/// Memory of `pid` in MiB: its VmRSS; for a forking relay (socat: one process per
/// connection) the sum of the whole tree's PSS, so shared pages are counted once.
pub fn memory_mib(pid: u32, forks: bool) -> Result<f64> {
    let kib = if forks {
        process_tree(pid).iter().filter_map(|&p| status_kib(p, "Pss:", "smaps_rollup")).sum()
    } else {
        rss_kib(pid)?
    };
    Ok(kib as f64 / 1024.0)
}

/// The entries of `/proc/<pid>/fd`: the files `pid` has open.
pub fn open_fds(pid: u32) -> Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd")).context("reading fds")?.count() as u64)
}

/// Clock ticks per second (`getconf CLK_TCK`), the unit of `/proc/<pid>/stat` times.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The hard open-file limit of this process.
pub fn nofile_hard() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Raises the open-file limit for 10,000 sessions of TCP forwarders (each holds several
/// sockets per session, some in this process): to 200,000 where allowed (root), else the
/// soft limit to the hard one. Uses `prlimit(1)` on this process, so no `unsafe` and no
/// extra dependency; children inherit the new limit. Returns "soft/hard" for the report.
pub fn raise_nofile() -> String {
    let me = std::process::id().to_string();
    let set = |limit: &str| {
        std::process::Command::new("prlimit")
            .args(["--pid", &me, &format!("--nofile={limit}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !set("200000:200000") {
        let hard = std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        if !hard.is_empty() {
            set(&format!("{hard}:"));
        }
    }
    std::process::Command::new("sh")
        .args(["-c", &format!("prlimit --pid {me} --nofile --noheadings --output SOFT,HARD")])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|| "unknown".into())
}
