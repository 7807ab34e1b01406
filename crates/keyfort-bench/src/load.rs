//! The load loop: N concurrent tasks repeat one operation for a fixed time, each recording the
//! latency of every request it completes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ops::Op;

/// What one round of one operation measured.
#[derive(Debug, Default)]
pub struct Round {
    /// Successful requests that started after the warm-up and ended inside the window.
    pub ok: u64,
    /// Failed requests during the whole round, warm-up included, by kind (`HTTP 503`, …).
    pub errors: BTreeMap<String, u64>,
    /// The full text of the first failure, for the report.
    pub first_error: Option<String>,
    /// Latency of each counted request in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// The measured window (warm-up excluded).
    pub window: Duration,
    /// Every request completed in the round, warm-up and failures included (for CPU per op).
    pub completed: u64,
    /// CPU time of the load generator and of the server under test during the whole round.
    pub cpu: Option<CpuUse>,
}

/// CPU seconds spent during a round, from `/proc/<pid>/stat` (Linux).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// Wall-clock seconds of the round, warm-up included (the span of the CPU times).
    pub wall_s: f64,
    pub client_s: f64,
    /// `None` when the server's process is not known (or is the client: raw SQLite).
    pub server_s: Option<f64>,
}

impl Round {
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// Server and client CPU microseconds per completed request.
    pub fn cpu_us_per_op(&self) -> (Option<f64>, Option<f64>) {
        let Some(cpu) = self.cpu.filter(|_| self.completed > 0) else {
            return (None, None);
        };
        let per_op = |s: f64| s * 1e6 / self.completed as f64;
        (cpu.server_s.map(per_op), Some(per_op(cpu.client_s)))
    }

    /// The cores the server and the load generator kept busy together during the round, on
    /// average; `None` without the server's CPU time. Below the machine's core count, the rest
    /// was idle: both sides waited on each other.
    pub fn cores_busy(&self) -> Option<f64> {
        let cpu = self.cpu.filter(|c| c.wall_s > 0.0)?;
        Some((cpu.client_s + cpu.server_s?) / cpu.wall_s)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Nearest-rank percentile (`p` in 0..=100) in milliseconds; `None` without samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies_us.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        Some(f64::from(self.latencies_us[index]) / 1000.0)
    }
}

/// Per-task tallies, merged into a [`Round`].
#[derive(Default)]
struct Tally {
    completed: u64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

/// Runs `op` from `clients` concurrent tasks for `warmup + window`; only requests that start
/// after the warm-up and end inside the window count (errors count whenever they happen).
pub async fn run(op: Arc<Op>, clients: usize, warmup: Duration, window: Duration) -> Round {
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let result = op.call().await;
                let ended = Instant::now();
                tally.completed += 1;
                match result {
                    Ok(()) => {
                        if started >= measure_from && ended <= end {
                            tally.latencies_us.push(micros(ended - started));
                        }
                    }
                    Err(e) => {
                        *tally.errors.entry(e.kind()).or_default() += 1;
                        if tally.first_error.is_none() {
                            tally.first_error = Some(e.to_string());
                        }
                    }
                }
            }
            tally
        }));
    }

    let mut round = Round {
        window,
        ..Round::default()
    };
    for task in tasks {
        let tally = match task.await {
            Ok(tally) => tally,
            Err(e) => {
                *round.errors.entry("task failed".into()).or_default() += 1;
                round.first_error.get_or_insert_with(|| e.to_string());
                continue;
            }
        };
        round.completed += tally.completed;
        round.latencies_us.extend(tally.latencies_us);
        for (kind, n) in tally.errors {
            *round.errors.entry(kind).or_default() += n;
        }
        if round.first_error.is_none() {
            round.first_error = tally.first_error;
        }
    }
    round.ok = round.latencies_us.len() as u64;
    round.latencies_us.sort_unstable();
    round
}

/// CPU seconds (user + system, all threads) used so far by process `pid` (`"self"` for this
/// one); `None` off Linux or when the process is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // In USER_HZ clock ticks, which Linux fixes at 100 for user space on every architecture
    // the project builds for.
    Some((utime + stime) as f64 / 100.0)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let round = Round {
            latencies_us: (1..=100).map(|i| i * 1000).collect(),
            ok: 100,
            window: Duration::from_secs(2),
            ..Round::default()
        };
        assert_eq!(round.percentile_ms(50.0), Some(50.0));
        assert_eq!(round.percentile_ms(99.0), Some(99.0));
        assert_eq!(round.percentile_ms(100.0), Some(100.0));
        assert_eq!(round.ops_per_sec(), 50.0);
        assert_eq!(Round::default().percentile_ms(50.0), None);
    }

    #[test]
    fn cores_busy_counts_both_processes_over_the_whole_round() {
        let round = |server_s| Round {
            completed: 1000,
            cpu: Some(CpuUse {
                wall_s: 4.0,
                client_s: 2.5,
                server_s,
            }),
            ..Round::default()
        };
        assert_eq!(round(Some(4.5)).cores_busy(), Some(1.75));
        assert_eq!(round(None).cores_busy(), None);
        assert_eq!(Round::default().cores_busy(), None);
    }

    #[test]
    fn reads_this_process_cpu_time_on_linux() {
        if cfg!(target_os = "linux") {
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            assert!(x != 1);
            assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
            assert_eq!(cpu_seconds("0"), None);
        }
    }
}
