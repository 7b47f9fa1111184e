//! What the example shows while it runs (indicatif progress on stderr, library logs above it) and
//! at the end (comfy-table tables on stdout, latencies from an HDR histogram).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use grid::Manager;
use hdrhistogram::Histogram;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Call latencies in microseconds, from 1 µs to 1 hour, to 3 significant digits.
#[derive(Debug, Clone)]
pub(crate) struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Latencies {
        // Constant, valid bounds (1 <= low, high >= 2 * low, 3 significant figures).
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        Latencies(h)
    }
}

impl Latencies {
    /// Records one latency.
    pub(crate) fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(micros);
    }

    /// Adds another sample (same bounds, so nothing is dropped).
    pub(crate) fn merge(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    /// The `p`-th percentile (0..=100), or `None` without samples.
    pub(crate) fn percentile(&self, p: f64) -> Option<Duration> {
        (!self.0.is_empty()).then(|| Duration::from_micros(self.0.value_at_quantile(p / 100.0)))
    }

    /// `p50 / p99 / p99.9 / max`, or "no samples".
    pub(crate) fn summary(&self) -> String {
        let p = |q| {
            self.percentile(q)
                .map_or("-".to_owned(), |d| format!("{d:.2?}"))
        };
        if self.0.is_empty() {
            return "no samples".to_owned();
        }
        format!("{} / {} / {} / {}", p(50.0), p(99.0), p(99.9), p(100.0))
    }
}

/// Progress on stderr: an indicatif bar or spinner per phase on a terminal, plain lines when
/// stderr is piped (a log file or a test). Library log lines go through [`Progress::log_writer`]
/// so they print above the bar instead of through it.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    multi: MultiProgress,
    tty: bool,
}

impl Progress {
    /// A progress display on stderr.
    pub(crate) fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        let target = if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
            tty,
        }
    }

    /// A line printed above the bars (always shown, piped or not).
    pub(crate) fn print(&self, text: &str) {
        if self.tty {
            let _ = self.multi.println(text);
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }

    /// Starts a phase: prints its name.
    pub(crate) fn phase(&self, name: &str) {
        self.print(&format!("== {name}"));
    }

    /// A bar that fills over `length` (a timed phase); its message carries live counts.
    pub(crate) fn timed(&self, length: Duration) -> Bar {
        let bar = ProgressBar::new(u64::try_from(length.as_millis()).unwrap_or(u64::MAX).max(1));
        if let Ok(style) =
            ProgressStyle::with_template("  {spinner} [{elapsed_precise}] {bar:30.cyan/blue} {msg}")
        {
            bar.set_style(style);
        }
        self.add(bar)
    }

    /// A spinner for a phase of unknown length.
    pub(crate) fn spinner(&self, message: &str) -> Bar {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("  {spinner} [{elapsed_precise}] {msg}") {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        self.add(bar)
    }

    fn add(&self, bar: ProgressBar) -> Bar {
        let bar = self.multi.add(bar);
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar {
            bar,
            progress: self.clone(),
        }
    }

    /// A writer for `tracing_subscriber::fmt` that prints log lines above the bars.
    pub(crate) fn log_writer(&self) -> LogWriter {
        LogWriter(self.multi.clone())
    }
}

/// One phase's bar. Piped, it prints only its final line.
#[derive(Debug)]
pub(crate) struct Bar {
    bar: ProgressBar,
    progress: Progress,
}

impl Bar {
    /// Updates the live message (shown on a terminal only).
    pub(crate) fn message(&self, text: String) {
        self.bar.set_message(text);
    }

    /// Moves a timed bar to `elapsed`.
    pub(crate) fn elapsed(&self, elapsed: Duration) {
        self.bar
            .set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
    }

    /// Ends the phase with a line that stays (on a terminal and when piped).
    pub(crate) fn finish(self, text: &str) {
        self.bar.finish_and_clear();
        self.progress.print(&format!("  {text}"));
    }
}

/// Writes library log lines to stderr with the progress bars hidden for the moment.
#[derive(Debug, Clone)]
pub(crate) struct LogWriter(MultiProgress);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .suspend(|| std::io::stderr().lock().write_all(buf))
            .map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

/// A named pass/fail check.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// What was checked.
    pub(crate) name: String,
    /// Whether it held.
    pub(crate) ok: bool,
    /// What was seen (shown for passes and failures alike).
    pub(crate) detail: String,
}

impl Check {
    /// A check that held.
    pub(crate) fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::that(name, true, detail)
    }

    /// A check that failed, with why.
    pub(crate) fn fail(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::that(name, false, detail)
    }

    /// Pass or fail by a condition; `detail` says what was seen.
    pub(crate) fn that(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        }
    }
}

/// Tables wrap long cells at this width (the example does not ask the terminal for its own).
const TABLE_WIDTH: u16 = 120;

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(TABLE_WIDTH)
        .set_header(header.iter().copied());
    t
}

/// Prints a two-column table.
pub(crate) fn table(title: &str, rows: &[(String, String)]) {
    let mut t = new_table(&[title, ""]);
    for (k, v) in rows {
        t.add_row([k.as_str(), v.as_str()]);
    }
    println!("\n{t}");
}

/// Prints every node's connection counters.
pub(crate) fn node_stats(managers: &[&Manager]) {
    let mut t = new_table(&[
        "node",
        "peer",
        "state",
        "connects",
        "frames in",
        "frames out",
        "in-flight",
        "rtt",
    ]);
    for m in managers {
        for c in m.stats().connections {
            t.add_row([
                m.name().to_owned(),
                c.peer,
                format!("{:?}", c.state),
                c.connects.to_string(),
                c.frames_in.to_string(),
                c.frames_out.to_string(),
                c.in_flight.total().to_string(),
                match (c.last_rtt, c.state) {
                    (Some(d), _) => format!("{d:.1?}"),
                    (None, grid::ConnState::Connected) => "no ping yet".to_owned(),
                    (None, _) => "-".to_owned(),
                },
            ]);
        }
    }
    for col in 3..8 {
        if let Some(c) = t.column_mut(col) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("\nnode stats\n{t}");
}

/// Prints the checks; true if all held.
pub(crate) fn checks(checks: &[Check]) -> bool {
    let mut t = new_table(&["", "check", "seen"]);
    for c in checks {
        t.add_row([
            if c.ok { "ok" } else { "FAIL" },
            c.name.as_str(),
            c.detail.as_str(),
        ]);
    }
    println!("\nchecks\n{t}");
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
