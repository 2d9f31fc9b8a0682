//! Progress on a terminal: a spinner while both sides are read, then a bar with an ETA while
//! the plan is applied. Driven by the run's progress events ([`pipeline::Event`]), which the
//! pipeline sends whoever listens; hidden when stderr is not a terminal (schedulers, CI), and
//! log lines are printed above the bar rather than through it.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

use crate::pipeline::Event;

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// The process's bar. It starts hidden and is drawn on stderr from the start of a run, and
/// only when stderr is a terminal.
pub fn bar() -> &'static ProgressBar {
    BAR.get_or_init(ProgressBar::hidden)
}

fn on_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Removes the bar before the run's summary is printed.
pub fn finish() {
    bar().finish_and_clear();
}

/// Writes log lines with the bar suspended, so they scroll above it.
#[derive(Clone, Copy, Default)]
pub struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        bar().suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Writer;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Moves the bar on one of the run's events.
pub fn show(event: Event) {
    let bar = bar();
    match event {
        Event::Reading => {
            if !on_terminal() {
                return;
            }
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message("reading the directory and Microsoft Graph");
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Event::Applying { actions } => {
            bar.disable_steady_tick();
            bar.set_style(
                ProgressStyle::with_template(
                    "applying {bar:40} {pos}/{len} actions, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_length(u64::try_from(actions).unwrap_or(u64::MAX));
            bar.set_position(0);
            bar.reset_eta();
        }
        Event::ActionEnded => bar.inc(1),
    }
}
