//! Linkerd's process families, read from procfs at each scrape (`process_start_time_seconds`,
//! `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_threads`), and
//! `proxy_build_info`. Where procfs is missing (not Linux) the process families are left out.

use std::path::{Path, PathBuf};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// Linux reports process times in `USER_HZ` ticks, which the kernel fixes at 100 for user space
/// on every architecture the gateway is built for (x86_64, aarch64).
const USER_HZ: f64 = 100.0;

/// Registers the process collector and `proxy_build_info` in `registry`.
pub(super) fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector {
        proc: PathBuf::from("/proc"),
    }));
    let build = Family::<BuildLabels, Gauge>::default();
    build.get_or_create(&BuildLabels::current()).set(1);
    registry.register(
        "proxy_build_info",
        "Proxy build info (always 1; the labels say which build)",
        build,
    );
}

/// `proxy_build_info`'s labels, as Linkerd's proxy names them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: &'static str,
    /// The commit, from `MESHGATE_GIT_SHA` at build time; `unknown` without it.
    pub git_sha: &'static str,
    /// `release` or `debug`.
    pub profile: &'static str,
    /// Always `meshgate`.
    pub vendor: &'static str,
}

impl BuildLabels {
    /// The labels of this build.
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_sha: option_env!("MESHGATE_GIT_SHA").unwrap_or("unknown"),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            vendor: "meshgate",
        }
    }
}

/// Reads `<proc>/self/*` on every scrape.
#[derive(Debug)]
struct ProcessCollector {
    proc: PathBuf,
}

/// One reading of the process, each value `None` when its source could not be read.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    start_time_seconds: Option<f64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    threads: Option<u64>,
}

impl Sample {
    fn read(proc: &Path) -> Self {
        let read = |path: &str| std::fs::read_to_string(proc.join(path)).ok();
        let stat = read("self/stat").and_then(|s| parse_stat(&s));
        let boot = read("stat").and_then(|s| parse_boot_time(&s));
        let status = read("self/status")
            .map(|s| parse_status(&s))
            .unwrap_or_default();
        let open_fds = std::fs::read_dir(proc.join("self/fd"))
            .ok()
            .map(|dir| dir.count() as u64);
        Self {
            start_time_seconds: stat
                .zip(boot)
                .map(|(stat, boot)| boot as f64 + stat.start_ticks as f64 / USER_HZ),
            cpu_seconds: stat.map(|stat| stat.cpu_ticks as f64 / USER_HZ),
            open_fds,
            max_fds: read("self/limits").and_then(|s| parse_max_fds(&s)),
            resident_bytes: status.resident_kib.map(|kib| kib * 1024),
            virtual_bytes: status.virtual_kib.map(|kib| kib * 1024),
            threads: status.threads,
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = Sample::read(&self.proc);
        let gauges = [
            (
                "process_start_time_seconds",
                "Time that the process started (in seconds since the UNIX epoch).",
                sample.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                sample.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                sample.max_fds.map(|v| v as f64),
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                sample.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                sample.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                sample.threads.map(|v| v as f64),
            ),
        ];
        if let Some(cpu) = sample.cpu_seconds {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// What `/proc/self/stat` says, in ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stat {
    /// `utime + stime`.
    cpu_ticks: u64,
    /// `starttime`: ticks after boot.
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest[0] is field 3 (state): field n is rest[n - 3].
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` from `/proc/<pid>/limits`; `None` when unlimited.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Memory and threads from `/proc/<pid>/status`.
#[derive(Debug, Default, PartialEq)]
struct Status {
    resident_kib: Option<u64>,
    virtual_kib: Option<u64>,
    threads: Option<u64>,
}

fn parse_status(text: &str) -> Status {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Status {
        resident_kib: value("VmRSS:"),
        virtual_kib: value("VmSize:"),
        threads: value("Threads:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (meshgate (a) b) S 1 4242 4242 0 -1 4194560 1024 0 0 0 \
                        250 50 0 0 20 0 3 0 123456 12345678 2048 18446744073709551615";

    #[test]
    fn stat_fields_are_counted_after_the_command_even_with_parentheses_in_it() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 123_456
            })
        );
        assert_eq!(parse_stat("4242 (meshgate) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn limits_give_the_soft_open_files_limit_and_unlimited_gives_none() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds("Max open files            unlimited            unlimited    files\n"),
            None
        );
    }

    #[test]
    fn status_gives_memory_in_kib_and_threads() {
        let status = "Name:\tmeshgate\nVmSize:\t  123456 kB\nVmRSS:\t    8192 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status(status),
            Status {
                resident_kib: Some(8192),
                virtual_kib: Some(123_456),
                threads: Some(3),
            }
        );
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn a_fake_procfs_is_read_into_one_sample() {
        let dir = std::env::temp_dir().join(format!("meshgate-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("self/fd")).unwrap();
        for fd in ["0", "1", "2"] {
            std::fs::write(dir.join("self/fd").join(fd), "").unwrap();
        }
        std::fs::write(dir.join("self/stat"), STAT).unwrap();
        std::fs::write(dir.join("stat"), "btime 1700000000\n").unwrap();
        std::fs::write(dir.join("self/status"), "VmRSS:\t2 kB\nThreads:\t5\n").unwrap();
        std::fs::write(
            dir.join("self/limits"),
            "Max open files  4096  4096  files\n",
        )
        .unwrap();
        let sample = Sample::read(&dir);
        assert_eq!(
            sample,
            Sample {
                start_time_seconds: Some(1_700_000_000.0 + 1234.56),
                cpu_seconds: Some(3.0),
                open_fds: Some(3),
                max_fds: Some(4096),
                resident_bytes: Some(2048),
                virtual_bytes: None,
                threads: Some(5),
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read_from_the_real_procfs() {
        let sample = Sample::read(Path::new("/proc"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = sample.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{sample:?}"
        );
        assert!(sample.open_fds.unwrap() >= 3, "{sample:?}");
        assert!(sample.resident_bytes.unwrap() > 1024 * 1024, "{sample:?}");
        assert!(sample.threads.unwrap() >= 1, "{sample:?}");
        assert!(sample.cpu_seconds.is_some(), "{sample:?}");
    }
}
