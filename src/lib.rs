//! Campus Gateway: the edge daemon behind a school's safety programme.
//!
//! # Code map
//!
//! Data flows one way, through bounded channels; acknowledgements flow back
//! through the readings' [`reading::Ack`] tokens:
//!
//! ```text
//! sources/mqtt ──► router ──► sink: batcher ─► appender ─► spool (disk) ─► writer ─► InfluxDB
//!   (decode)      (registry)                      │ fsync                  ▲ later: rules, alarms
//!      ▲                                          ▼                        │ (clone the Ack)
//!      └──────── PUBACK when every Ack clone is dropped ◄──────────────────┘
//! ```
//!
//! - `reading`   — `Reading`, the one normalized type; the five kinds and their fields;
//!   `Ack`, the acknowledgement token a reading of a QoS 1 message carries.
//! - `config`    — the TOML file, `CAMPUSGW__…` overrides, secrets, validation with key paths and lines.
//! - `sources/`  — tasks that own a connection and send `Reading`s: `mqtt` (manual,
//!   in-order acknowledgements); `decode` is pure.
//! - `router`    — admits readings through the `registry` and fans them out.
//! - `registry`  — declared and seen devices, their places, last readings, online state.
//! - `sink/`     — line protocol, the write-ahead disk spool (`spool`: segments,
//!   CRC, cursor, drop-oldest), and writing to InfluxDB (v1 and v2) from it with retries.
//! - `web/`      — axum: `/healthz`, `/metrics` (later the status page and API).
//! - `telemetry/`— logs, Prometheus metrics, component health.
//! - `demo/`     — `campusgw demo`: embedded broker and a simulated campus.
//! - `app`       — wiring and ordered shutdown.
//!
//! # Invariants
//!
//! - `reading`, `sources::decode` and `sink::line_protocol` do no I/O and never spawn.
//! - Only `sources/` knows topics and payloads; only `sink/` knows line protocol
//!   and the spool's format; only `web/` knows response shapes.
//! - Components never call each other: they share channels and read-only
//!   state (`Registry`, `Metrics`, `Health`). The router is the registry's only writer.
//! - Every queue is bounded; a full queue makes its producer wait, never grow.
//!   A backlog towards InfluxDB lives in the spool on disk, bounded by
//!   `gateway.spool_max_mb`; past it the oldest data is dropped, counted and
//!   shown — never silently.
//! - Acknowledge after persist: a QoS 1 message is acknowledged to the broker
//!   only when every holder of its `Ack` has made it durable (the spool's
//!   fsync; later also the alarm store). Whoever gives a reading up without
//!   persisting it calls `Ack::abandon` so the broker sends it again.
//!   Redelivered duplicates are harmless: a point's identity (measurement,
//!   tags, time) makes the rewrite idempotent.
//! - Nothing that comes from outside (network, files, config) is unwrapped:
//!   it is counted, logged (rate-limited) and refused.

#![warn(missing_docs, unreachable_pub)]

pub mod app;
pub mod config;
pub mod demo;
pub mod reading;
pub mod registry;
pub mod router;
pub mod sink;
pub mod sources;
pub mod telemetry;
pub mod web;
