//! What the gateway tells about itself: logs, Prometheus metrics, component health.
//!
//! Every drop, reject and reconnect is counted in `Metrics`; `Health` holds
//! each component's last known state for `/healthz`.
//!
//! Log lines carry device-supplied text (topics, ids, field names): the human
//! format escapes control characters in every field, as the JSON format does,
//! so a topic holding a newline or an ANSI sequence cannot forge a line or
//! colour the operator's terminal.

pub mod broker;
pub mod health;
pub mod metrics;
mod ratelimit;
pub mod redact;
pub mod web;

pub use health::{affects_readiness, Component, Health, Status};
pub use metrics::{Metrics, ModbusDeviceMetrics, ModbusFailure};
pub use ratelimit::LogLimiter;
pub use redact::redact_urls;

use std::fmt::Write as _;

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{fmt, prelude::*, EnvFilter, Layer};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise (journald, docker).
    Auto,
    /// Human-readable.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides the level.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        let colours = std::io::stderr().is_terminal();
        registry
            .with(human_layer(std::io::stderr, colours))
            .try_init()
    };
}

/// The human-readable format, writing to `writer`: tracing's default layout
/// with every field's value escaped by [`escaped_field`]; colours only for a
/// terminal (not into a file or a pipe).
fn human_layer<S, W>(writer: W, colours: bool) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer()
        .fmt_fields(debug_fn(escaped_field).delimited(" "))
        .with_ansi(colours)
        .with_writer(writer)
}

/// Writes one field as `name=value` (the message bare), control characters
/// and bidirectional overrides of the value written as escapes. tracing's
/// default escapes only the message: a field logged with `%` (Display) went
/// out raw.
fn escaped_field(
    w: &mut Writer<'_>,
    field: &Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    if field.name() != "message" {
        write!(w, "{}=", field.name().trim_start_matches("r#"))?;
    }
    write!(Escaping(w), "{value:?}")
}

/// Passes text through, escaping what a terminal or a log reader would take
/// as something other than text.
struct Escaping<'a, W: std::fmt::Write>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                // C0, DEL and C1 controls (ESC among them), and the bidi
                // overrides that make text read in another order than written.
                c if c.is_control()
                    || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
                {
                    write!(self.0, "\\u{{{:x}}}", c as u32)?
                }
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> fmt::MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn device_text_cannot_forge_lines_or_colours_in_the_human_format() {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(human_layer(buf.clone(), false));
        let topic =
            "campus/yz/gate/east-1\n2026-12-01T00:00:00Z  INFO Door closed.\x1b[31m\u{202e}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(topic = %topic, field = topic, "Message rejected.\r\x1b[0m");
        });
        let out = String::from_utf8(buf.0.lock().expect("buffer").clone()).expect("utf-8");
        let line = out.strip_suffix('\n').expect("one line, ended");
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "raw control characters in {line:?}"
        );
        assert!(
            line.contains("topic=campus/yz/gate/east-1\\n2026"),
            "{line}"
        );
        assert!(line.contains("\\u{1b}[31m"), "{line}");
        assert!(line.contains("Message rejected.\\r\\u{1b}[0m"), "{line}");
    }
}
