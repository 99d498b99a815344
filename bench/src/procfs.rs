//! What the harness reads from `/proc`: CPU time (utime + stime, in seconds) of processes
//! and of this process's threads grouped by name, and memory (`VmRSS`, `VmHWM`).

use std::fs;

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `[utime, stime, cutime, cstime]` in clock ticks from a `stat` file.
fn stat_fields(path: &str) -> Option<[u64; 4]> {
    let text = fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3; utime is field 14, so index 11.
    Some([
        f.get(11)?.parse().ok()?,
        f.get(12)?.parse().ok()?,
        f.get(13)?.parse().ok()?,
        f.get(14)?.parse().ok()?,
    ])
}

fn ppid(pid: u32) -> Option<u32> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) a process used so far, all its threads included.
pub fn cpu_of_pid(pid: u32) -> f64 {
    stat_fields(&format!("/proc/{pid}/stat")).map_or(0.0, |f| (f[0] + f[1]) as f64 / ticks_per_second())
}

/// CPU seconds of this whole process (live and exited threads).
pub fn cpu_self() -> f64 {
    stat_fields("/proc/self/stat").map_or(0.0, |f| (f[0] + f[1]) as f64 / ticks_per_second())
}

/// CPU seconds of this process's live threads whose name starts with `prefix`.
pub fn cpu_self_threads(prefix: &str) -> f64 {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0;
    for entry in dir.flatten() {
        let path = entry.path();
        let comm = fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix)
            && let Some(f) = stat_fields(&path.join("stat").to_string_lossy())
        {
            ticks += f[0] + f[1];
        }
    }
    ticks as f64 / ticks_per_second()
}

/// CPU seconds of a PostgreSQL server: the postmaster with its reaped children (backends
/// that exited) and its live children.
pub fn cpu_of_tree(root: u32) -> f64 {
    let mut ticks = stat_fields(&format!("/proc/{root}/stat")).map_or(0, |f| f.iter().sum());
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if ppid(pid) == Some(root)
                && let Some(f) = stat_fields(&format!("/proc/{pid}/stat"))
            {
                ticks += f[0] + f[1];
            }
        }
    }
    ticks as f64 / ticks_per_second()
}

/// A field of `/proc/PID/status` in kB (`pid` may be `self`).
pub fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Resets the peak RSS (`VmHWM`) of a process to its current RSS (Linux ≥ 4.0).
pub fn reset_peak(pid: &str) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
