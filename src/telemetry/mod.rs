//! What the gateway tells about itself: logs, Prometheus metrics, component health.
//!
//! Every drop, reject and reconnect is counted in `Metrics`; `Health` holds
//! each component's last known state for `/healthz`.

pub mod health;
pub mod metrics;
mod ratelimit;
pub mod redact;
pub mod web;

pub use health::{affects_readiness, Component, Health, Status};
pub use metrics::{Metrics, ModbusDeviceMetrics, ModbusFailure};
pub use ratelimit::LogLimiter;
pub use redact::redact_urls;

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rumqttd=off"));
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
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
}
