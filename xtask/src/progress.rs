//! Progress bars for the commands, and the library observers that drive them.
//!
//! On a terminal a command draws an indicatif bar. When stderr is not a terminal (a Slurm or CI
//! log, a pipe) indicatif draws nothing, so [`bar`] hides it and prints a plain-text line every
//! few seconds instead (`BURNLENS_PROGRESS_SECS`, default 5): a batch log shows how far a long
//! run got and how long it has left.

use std::io::IsTerminal;
use std::time::Duration;

use burnlens_experiments::Observer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// An observer that sets `bar`'s length and position from `(done, total)`.
pub fn observer(bar: &ProgressBar) -> Observer {
    let bar = bar.clone();
    Observer::new(move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
}

/// A progress bar of `len` steps (0 when an observer sets it later) drawn with `template` on a
/// terminal; elsewhere hidden, with a plain line naming `what` every few seconds on stderr.
pub fn bar(len: u64, template: &str, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    if std::io::stderr().is_terminal() {
        return ProgressBar::new(len).with_style(style);
    }
    let bar =
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden()).with_style(style);
    let secs = std::env::var("BURNLENS_PROGRESS_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(5.0);
    ticker(&bar, what, Duration::from_secs_f64(secs), |line| {
        eprintln!("{line}")
    });
    bar
}

/// Every `every`, until `bar` finishes or is dropped, hands `sink` a line saying where `bar`
/// is.
pub fn ticker(
    bar: &ProgressBar,
    what: &str,
    every: Duration,
    sink: impl Fn(String) + Send + 'static,
) {
    let weak = bar.downgrade();
    let what = what.to_string();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(every);
            let Some(bar) = weak.upgrade() else { break };
            if bar.is_finished() {
                break;
            }
            sink(line(&bar, &what));
        }
    });
}

/// `what: 12/40 (30%), 8s elapsed, ~19s left · message`.
pub fn line(bar: &ProgressBar, what: &str) -> String {
    let (pos, len) = (bar.position(), bar.length().unwrap_or(0));
    let elapsed = bar.elapsed().as_secs();
    let mut s = format!("{what}: {pos}/{len}");
    if len > 0 {
        s += &format!(" ({:.0}%)", 100.0 * pos as f64 / len as f64);
    }
    s += &format!(", {elapsed}s elapsed");
    if pos > 0 && len > pos {
        s += &format!(", ~{}s left", bar.eta().as_secs());
    }
    let msg = bar.message();
    if !msg.is_empty() {
        s += &format!(" · {msg}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_hidden_bar_reports_plain_lines_until_it_finishes() {
        let bar = ProgressBar::with_draw_target(Some(40), ProgressDrawTarget::hidden());
        bar.set_position(12);
        bar.set_message("fact 2/3");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        ticker(&bar, "restorations", Duration::from_millis(20), move |l| {
            sink.lock().unwrap().push(l)
        });
        std::thread::sleep(Duration::from_millis(150));
        bar.finish();
        std::thread::sleep(Duration::from_millis(60));
        let got = lines.lock().unwrap().clone();
        assert!(got.len() >= 2, "{got:?}");
        assert!(
            got[0].starts_with("restorations: 12/40 (30%), ") && got[0].ends_with(" · fact 2/3"),
            "{got:?}"
        );
        // Nothing after the bar finished.
        let n = got.len();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(lines.lock().unwrap().len(), n);
    }
}
