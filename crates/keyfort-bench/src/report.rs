//! The table: median rounds, ratios against the baselines of the same run, and the goals.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::load::Round;

/// Every measured operation, in the order the rounds run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    KeyfortWrap,
    KeyfortNoop,
    BaoEncrypt,
    KeyfortUnwrap,
    BaoDecrypt,
    KeyfortCreate,
    BaoCreate,
    SqlitePerKey,
    SqliteGroup,
}

impl Target {
    /// The throughput rounds, alternating targets in this order.
    pub const THROUGHPUT: [Target; 5] = [
        Target::KeyfortWrap,
        Target::KeyfortNoop,
        Target::BaoEncrypt,
        Target::KeyfortUnwrap,
        Target::BaoDecrypt,
    ];
    /// The key creation rounds, alternating targets in this order.
    pub const CREATION: [Target; 4] = [
        Target::KeyfortCreate,
        Target::BaoCreate,
        Target::SqlitePerKey,
        Target::SqliteGroup,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Target::KeyfortWrap => "keyfort wrap",
            Target::KeyfortNoop => "keyfort no-op (ping)",
            Target::BaoEncrypt => "openbao encrypt",
            Target::KeyfortUnwrap => "keyfort unwrap",
            Target::BaoDecrypt => "openbao decrypt",
            Target::KeyfortCreate => "keyfort create key (durable)",
            Target::BaoCreate => "openbao create key (in memory)",
            Target::SqlitePerKey => "raw sqlite, 1 txn/key (durable)",
            Target::SqliteGroup => "raw sqlite, group commit (durable)",
        }
    }
}

/// Everything measured, by concurrency and target.
#[derive(Default)]
pub struct Results {
    rounds: BTreeMap<(usize, Target), Vec<Round>>,
}

/// The median round of one target plus the errors of all its rounds.
struct Summary<'a> {
    median: &'a Round,
    errors: u64,
}

impl Results {
    pub fn add(&mut self, clients: usize, target: Target, round: Round) {
        self.rounds
            .entry((clients, target))
            .or_default()
            .push(round);
    }

    pub fn error_count(&self) -> u64 {
        self.rounds.values().flatten().map(Round::error_count).sum()
    }

    fn summary(&self, clients: usize, target: Target) -> Option<Summary<'_>> {
        let rounds = self.rounds.get(&(clients, target))?;
        let mut by_rate: Vec<&Round> = rounds.iter().collect();
        by_rate.sort_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()));
        let median = by_rate.get(by_rate.len() / 2)?;
        Some(Summary {
            median,
            errors: rounds.iter().map(Round::error_count).sum(),
        })
    }

    fn rate(&self, clients: usize, target: Target) -> Option<f64> {
        self.summary(clients, target)
            .map(|s| s.median.ops_per_sec())
    }

    fn ratio(&self, clients: usize, a: Target, b: Target) -> Option<f64> {
        let (a, b) = (self.rate(clients, a)?, self.rate(clients, b)?);
        (b > 0.0).then(|| a / b)
    }

    fn row(&self, out: &mut String, clients: usize, target: Target) {
        let Some(s) = self.summary(clients, target) else {
            return;
        };
        let ms = |p| fmt_fixed(s.median.percentile_ms(p), 3);
        let (server_us, client_us) = s.median.cpu_us_per_op();
        let us = |v| fmt_fixed(v, 0);
        let cores = fmt_fixed(s.median.cores_busy(), 2);
        let errors = if s.errors == 0 {
            "0".to_owned()
        } else {
            format!("{} ERRORS", s.errors)
        };
        let _ = writeln!(
            out,
            "{clients:>7}  {:<36} {:>10.0} {:>9} {:>9} {:>10} {:>10} {:>6}  {errors}",
            target.label(),
            s.median.ops_per_sec(),
            ms(50.0),
            ms(99.0),
            us(server_us),
            us(client_us),
            cores,
        );
    }

    /// The whole report. `goal_clients` is the concurrency the goals are stated at.
    pub fn render(&self, throughput_clients: &[usize], create_clients: usize) -> String {
        let mut out = String::new();
        let header = format!(
            "{:>7}  {:<36} {:>10} {:>9} {:>9} {:>10} {:>10} {:>6}  errors",
            "clients", "operation", "ops/s", "p50 ms", "p99 ms", "srv us/op", "load us/op", "cores"
        );
        let _ = writeln!(out, "Throughput (median round)");
        let _ = writeln!(out, "{header}");
        for &clients in throughput_clients {
            for target in Target::THROUGHPUT {
                self.row(&mut out, clients, target);
            }
        }

        let _ = writeln!(out, "\nRatios (median rounds, same run)");
        let _ = writeln!(
            out,
            "{:>7}  {:>16}  {:>18}  {:>10}  {:>12}",
            "clients", "wrap/bao-encrypt", "unwrap/bao-decrypt", "wrap/no-op", "unwrap/no-op"
        );
        for &clients in throughput_clients {
            let x = |a, b| fmt_ratio(self.ratio(clients, a, b));
            let pct = |a, b| fmt_pct(self.ratio(clients, a, b));
            let _ = writeln!(
                out,
                "{clients:>7}  {:>16}  {:>18}  {:>10}  {:>12}",
                x(Target::KeyfortWrap, Target::BaoEncrypt),
                x(Target::KeyfortUnwrap, Target::BaoDecrypt),
                pct(Target::KeyfortWrap, Target::KeyfortNoop),
                pct(Target::KeyfortUnwrap, Target::KeyfortNoop),
            );
        }

        let _ = writeln!(out, "\nKey creation (median round)");
        let _ = writeln!(out, "{header}");
        for target in Target::CREATION {
            self.row(&mut out, create_clients, target);
        }
        let c = create_clients;
        let _ = writeln!(
            out,
            "ratios: keyfort/openbao {}, keyfort/raw-sqlite-1-txn {}, keyfort/raw-sqlite-group {}",
            fmt_ratio(self.ratio(c, Target::KeyfortCreate, Target::BaoCreate)),
            fmt_ratio(self.ratio(c, Target::KeyfortCreate, Target::SqlitePerKey)),
            fmt_ratio(self.ratio(c, Target::KeyfortCreate, Target::SqliteGroup)),
        );

        let _ = writeln!(out, "\nGoals at 64 clients");
        let goal = |out: &mut String, text: &str, value: Option<f64>, min: f64, pct: bool| {
            let shown = if pct {
                fmt_pct(value)
            } else {
                fmt_ratio(value)
            };
            let verdict = match value {
                Some(v) if v >= min => "met",
                Some(_) => "NOT MET",
                None => "not measured",
            };
            let _ = writeln!(out, "  {text:<44} {shown:>8}  {verdict}");
        };
        goal(
            &mut out,
            "wrap >= 3x OpenBao encrypt",
            self.ratio(64, Target::KeyfortWrap, Target::BaoEncrypt),
            3.0,
            false,
        );
        goal(
            &mut out,
            "wrap >= 60% of the no-op rate",
            self.ratio(64, Target::KeyfortWrap, Target::KeyfortNoop),
            0.6,
            true,
        );
        goal(
            &mut out,
            "durable key creation >= OpenBao key creation",
            self.ratio(64, Target::KeyfortCreate, Target::BaoCreate),
            1.0,
            false,
        );

        let errors = self.error_count();
        if errors > 0 {
            let _ = writeln!(out, "\nERRORS: {errors} failed request(s):");
            for ((clients, target), rounds) in &self.rounds {
                for (i, round) in rounds.iter().enumerate() {
                    if round.error_count() == 0 {
                        continue;
                    }
                    let kinds: Vec<String> = round
                        .errors
                        .iter()
                        .map(|(k, n)| format!("{n} x {k}"))
                        .collect();
                    let _ = writeln!(
                        out,
                        "  {} at {clients} clients, round {}: {}; first: {}",
                        target.label(),
                        i + 1,
                        kinds.join(", "),
                        round.first_error.as_deref().unwrap_or("-"),
                    );
                }
            }
        }
        out
    }
}

/// `v` with `decimals` digits after the point, or `-` when it was not measured.
fn fmt_fixed(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"))
}

fn fmt_pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.0}%", r * 100.0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn round(ok: u64) -> Round {
        Round {
            ok,
            latencies_us: vec![1000; usize::try_from(ok).unwrap_or(0)],
            window: Duration::from_secs(1),
            ..Round::default()
        }
    }

    #[test]
    fn median_round_and_goals() {
        let mut r = Results::default();
        for ok in [900, 100, 500] {
            r.add(64, Target::KeyfortWrap, round(ok));
        }
        r.add(64, Target::BaoEncrypt, round(100));
        r.add(64, Target::KeyfortNoop, round(1000));
        assert_eq!(r.rate(64, Target::KeyfortWrap), Some(500.0));
        let text = r.render(&[64], 64);
        assert!(text.contains("5.00x"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("wrap >= 3x") && l.ends_with(" met")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains("wrap >= 60%") && l.ends_with("NOT MET")),
            "{text}"
        );
        assert!(text.contains("not measured"), "{text}");
    }
}
