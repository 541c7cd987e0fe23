//! The conventional process series (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_start_time_seconds`), read from `/proc` at each
//! scrape, as the Go and Python clients export them, so dashboards made for those fit.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Reads this process's CPU time, resident memory and start time on each scrape.
#[derive(Debug)]
pub struct Process;

/// This process's figures at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Figures {
    cpu_seconds: f64,
    resident_bytes: f64,
    start_unix_seconds: f64,
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Off Linux, or with /proc unreadable, there is nothing to say; the node serves on.
        let Some(f) = read() else { return Ok(()) };
        let cpu = ConstCounter::new(f.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(f.resident_bytes);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory size in bytes.",
            Some(&Unit::Bytes),
            rss.metric_type(),
        )?)?;
        let start = ConstGauge::new(f.start_unix_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since unix epoch in seconds.",
            Some(&Unit::Seconds),
            start.metric_type(),
        )?)
    }
}

#[cfg(target_os = "linux")]
fn read() -> Option<Figures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    parse(&stat, &statm, &boot, tick as f64, page as f64)
}

#[cfg(not(target_os = "linux"))]
fn read() -> Option<Figures> {
    None
}

/// The figures from `/proc/self/stat`, `/proc/self/statm` and `/proc/stat` (for the boot
/// time), with the clock tick rate and page size.
fn parse(stat: &str, statm: &str, boot: &str, tick: f64, page: f64) -> Option<Figures> {
    if tick <= 0.0 || page <= 0.0 {
        return None;
    }
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the
    // last ')', where field 3 (state) is the first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
    let resident_pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let btime: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Figures {
        cpu_seconds: (utime + stime) / tick,
        resident_bytes: resident_pages * page,
        start_unix_seconds: btime + start_ticks / tick,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_fields_after_a_command_with_spaces_and_parens() {
        let stat = "42 (mux bw (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 9 0 5000 1 2";
        let f = parse(
            stat,
            "1000 300 20 1 0 80 0",
            "cpu 1 2\nbtime 1700000000\n",
            100.0,
            4096.0,
        );
        assert_eq!(
            f,
            Some(Figures {
                cpu_seconds: 4.0,
                resident_bytes: 300.0 * 4096.0,
                start_unix_seconds: 1_700_000_050.0,
            })
        );
        assert_eq!(parse("garbage", "", "", 100.0, 4096.0), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let f = read().expect("/proc readable");
        assert!(f.resident_bytes > 0.0 && f.start_unix_seconds > 1.0e9);
    }
}
