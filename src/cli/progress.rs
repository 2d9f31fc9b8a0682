//! Progress on a terminal: a spinner while both sides are read, then a bar with an ETA while
//! the plan is applied. Driven by the run's own log events, so the pipeline knows nothing of
//! it; hidden when stderr is not a terminal (schedulers, CI), and log lines are printed above
//! the bar rather than through it.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;

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

/// The fields of an event the bar reacts to.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    actions: Option<u64>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "actions" {
            self.actions = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "actions" {
            self.actions = u64::try_from(value).ok();
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}

/// A `tracing` layer that moves the bar on the run's events.
pub struct Layer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let bar = bar();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = event.metadata().target();
        match fields.message.as_deref() {
            Some("run started") => {
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
            Some("applying the plan") => {
                let total = fields.actions.unwrap_or(0);
                bar.disable_steady_tick();
                bar.set_style(
                    ProgressStyle::with_template(
                        "applying {bar:40} {pos}/{len} actions, {per_sec}, ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_length(total);
                bar.set_position(0);
                bar.reset_eta();
            }
            Some(m) if target == "b2bsync::apply" && (m == "done" || m.starts_with("failed")) => {
                bar.inc(1);
            }
            _ => {}
        }
    }
}
