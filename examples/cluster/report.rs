//! Progress lines while the example runs, and the summary table at the end.

use std::io::Write;
use std::time::Duration;

use grid::Manager;

/// A sample of call latencies.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latencies {
    micros: Vec<u32>,
}

impl Latencies {
    /// Records one latency.
    pub(crate) fn record(&mut self, d: Duration) {
        self.micros
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds another sample.
    pub(crate) fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    /// The `p`-th percentile (0..=100).
    pub(crate) fn percentile(&mut self, p: f64) -> Duration {
        if self.micros.is_empty() {
            return Duration::ZERO;
        }
        self.micros.sort_unstable();
        let rank = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
        Duration::from_micros(u64::from(self.micros[rank.min(self.micros.len() - 1)]))
    }
}

/// One line that rewrites itself on a terminal, or plain lines when output is piped.
#[derive(Debug)]
pub(crate) struct Progress {
    tty: bool,
}

impl Progress {
    /// A progress writer on stderr.
    pub(crate) fn new() -> Progress {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Replaces the live line (or prints it, when piped).
    pub(crate) fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K  {text}");
        } else {
            let _ = writeln!(err, "  {text}");
        }
        let _ = err.flush();
    }

    /// Starts a phase: ends the live line and prints the phase name.
    pub(crate) fn phase(&self, name: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = writeln!(err);
        }
        let _ = writeln!(err, "== {name}");
    }

    /// Ends the live line.
    pub(crate) fn finish(&self) {
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// A named pass/fail check.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// What was checked.
    pub(crate) name: String,
    /// Whether it held.
    pub(crate) ok: bool,
    /// Details when it did not.
    pub(crate) detail: String,
}

impl Check {
    /// A check that held.
    pub(crate) fn pass(name: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: String::new(),
        }
    }

    /// A check that failed, with why.
    pub(crate) fn fail(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }

    /// Pass or fail by a condition.
    pub(crate) fn that(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok,
            detail: if ok { String::new() } else { detail.into() },
        }
    }
}

/// Prints a two-column table.
pub(crate) fn table(title: &str, rows: &[(String, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("\n{title}");
    println!("{}", "-".repeat(title.len().max(w + 20)));
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
}

/// Prints every node's connection counters.
pub(crate) fn node_stats(managers: &[&Manager]) {
    println!("\nnode stats");
    println!(
        "{:<24} {:<24} {:>10} {:>8} {:>10} {:>10} {:>9} {:>9}",
        "node", "peer", "state", "connects", "frames in", "frames out", "in-flight", "rtt"
    );
    for m in managers {
        for c in m.stats().connections {
            println!(
                "{:<24} {:<24} {:>10} {:>8} {:>10} {:>10} {:>9} {:>9}",
                m.name(),
                c.peer,
                format!("{:?}", c.state),
                c.connects,
                c.frames_in,
                c.frames_out,
                c.in_flight.total(),
                c.last_rtt.map_or("-".to_owned(), |d| format!("{d:.1?}")),
            );
        }
    }
}

/// Prints the checks; true if all held.
pub(crate) fn checks(checks: &[Check]) -> bool {
    println!("\nchecks");
    for c in checks {
        if c.ok {
            println!("  ok    {}", c.name);
        } else {
            println!("  FAIL  {}: {}", c.name, c.detail);
        }
    }
    let ok = checks.iter().all(|c| c.ok);
    println!(
        "\n{}",
        if ok {
            "RESULT: all checks passed"
        } else {
            "RESULT: some checks FAILED"
        }
    );
    ok
}
