//! What the kernel says about a process: CPU time, resident memory, open
//! descriptors; and about the machine: CPU model and core count.

use std::time::Duration;

/// CPU time of a process: the sum of its threads' run time from
/// `/proc/PID/task/*/schedstat` (nanoseconds), or user + system time from
/// `/proc/PID/stat` (10 ms ticks) where schedstat is missing. The systems
/// under test keep their threads for their whole life, so no exited
/// thread's time is lost.
pub fn cpu_time(pid: u32) -> Duration {
    let mut total = 0u64;
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let path = t.path().join("schedstat");
            if let Some(ns) = std::fs::read_to_string(path).ok().and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
            }) {
                total += ns;
                found = true;
            }
        }
    }
    if found {
        Duration::from_nanos(total)
    } else {
        stat_cpu_time(pid)
    }
}

/// User + system CPU time of a whole process (all threads, live or exited).
pub fn stat_cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name may hold spaces; fields resume after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    // USER_HZ is 100 on every Linux architecture that matters here.
    100
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// Anonymous resident memory in KiB (`RssAnon`): what the process owns,
/// as opposed to file pages (its code and libraries) it shares.
pub fn anon_kib(pid: u32) -> u64 {
    status_field(pid, "RssAnon:")
}

/// Peak resident set size in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of a process.
pub fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads:")
}

/// "AMD EPYC (Zen 4 family 25 model 17), 2 cores" or as much as is known.
pub fn machine(cores: usize) -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let family = field("cpu family").unwrap_or_default();
    let number = field("model\t").unwrap_or_default();
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let features: Vec<&str> = ["aes", "vaes", "avx2", "avx512f", "sha_ni"]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model} (family {family}, model {number}; {}), {cores} cores, Linux {}",
        features.join(" "),
        kernel.trim()
    )
}
