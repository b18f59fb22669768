//! Campus Gateway: the edge daemon behind a school's safety programme.
//!
//! # Code map
//!
//! Data flows one way, through bounded channels:
//!
//! ```text
//! sources/mqtt   ──┐
//!   (decode)       ├──► router ──► sink (batcher ─► writer ─► InfluxDB)
//! sources/modbus ──┘   (registry)                     ▲ later: spool, rules, alarms
//!   (map: plan, decode)
//! ```
//!
//! - `reading`   — `Reading`, the one normalized type; the five kinds and their fields.
//! - `config`    — the TOML file, `CAMPUSGW__…` overrides, secrets, validation with key paths and lines.
//! - `sources/`  — tasks that own a connection and send `Reading`s: `mqtt` (`decode` is pure);
//!   `modbus` (one task per TCP device, one per serial line; `modbus::map` is pure:
//!   register maps → coalesced read requests → fields; `modbus::transport` is the wire).
//! - `router`    — admits readings through the `registry` and fans them out.
//! - `registry`  — declared and seen devices, their places, last readings, online state.
//! - `sink/`     — line protocol, batching, writing to InfluxDB (v1 and v2) with retries.
//! - `web/`      — axum: `/healthz`, `/metrics` (later the status page and API).
//! - `telemetry/`— logs, Prometheus metrics, component health.
//! - `demo/`     — `campusgw demo`: embedded broker, a simulated campus, and simulated
//!   Modbus devices (tokio-modbus servers; the Modbus benchmark reuses them).
//! - `app`       — wiring and ordered shutdown.
//!
//! # Invariants
//!
//! - `reading`, `sources::decode`, `sources::modbus::map` and `sink::line_protocol`
//!   do no I/O and never spawn.
//! - Only `sources/` knows topics, payloads and registers; only `sink/` knows line protocol;
//!   only `web/` knows response shapes.
//! - Components never call each other: they share channels and read-only
//!   state (`Registry`, `Metrics`, `Health`). The router is the registry's only writer.
//! - Every queue is bounded; a full queue makes its producer wait, never grow.
//! - Nothing that comes from outside (network, files, config, device answers) is
//!   unwrapped: it is counted, logged (rate-limited) and refused.
//! - A polled device's trouble stays its own: every Modbus request has a timeout,
//!   each TCP device has its own task, and a device that is down shows in
//!   `/healthz` as `modbus/<id>` without making the gateway unready.
//! - One source, one reading type: a Modbus poll becomes the same `Reading` as an
//!   MQTT message of its kind (`source` says where it came from, nothing else differs).

#![warn(missing_docs, unreachable_pub)]

pub mod alarms;
pub mod app;
pub mod config;
pub mod demo;
pub mod reading;
pub mod registry;
pub mod router;
pub mod rules;
pub mod sink;
pub mod sources;
pub mod telemetry;
pub mod web;
