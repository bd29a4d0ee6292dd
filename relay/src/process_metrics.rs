//! The process metrics every Prometheus exporter serves (`process_*`, unprefixed, so the
//! dashboards and alerts operators already have find them), read from `/proc/self` at
//! each scrape: resident memory, open file descriptors and their limit, CPU time, start
//! time. On a system without `/proc` they are simply absent.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on every Linux there is).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the process's figures at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

/// One reading of `/proc/self`.
struct Reading {
    cpu_seconds: f64,
    resident_bytes: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: Option<u64>,
}

fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime, stime and starttime are fields 14, 15 and 22 of stat(5), so 11, 12 and 19
    // after the name.
    let cpu_seconds = (number(11)? + number(12)?) as f64 / TICKS_PER_SECOND;
    let started_ticks = number(19)?;
    // Resident memory from `status`, in KiB: `stat` counts pages, whose size varies (4 KiB
    // on x86, up to 64 KiB on some ARM kernels).
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let resident_kib: u64 =
        status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let resident_bytes = resident_kib * 1024;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        limits.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok()
    });
    Some(Reading {
        cpu_seconds,
        resident_bytes,
        start_time_seconds: boot_time as f64 + started_ticks as f64 / TICKS_PER_SECOND,
        open_fds,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(now) = read() else { return Ok(()) };
        let cpu = ConstCounter::new(now.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "CPU time used, user and system",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory", Some(now.resident_bytes as f64)),
            ("process_open_fds", "Open file descriptors", Some(now.open_fds as f64)),
            ("process_max_fds", "Most file descriptors the process may open", now.max_fds.map(|n| n as f64)),
            (
                "process_start_time_seconds",
                "When the process started, in seconds since the Unix epoch",
                Some(now.start_time_seconds),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_itself() {
        let now = read().expect("tests run on Linux");
        assert!(now.resident_bytes > 1 << 20, "{} bytes resident", now.resident_bytes);
        assert!(now.open_fds >= 3);
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(now.start_time_seconds <= since_epoch + 1.0 && now.start_time_seconds > since_epoch - 86_400.0);
    }
}
