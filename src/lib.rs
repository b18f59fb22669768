//! Campus Gateway: the edge daemon behind a school's safety programme.
//!
//! # Code map
//!
//! Data flows one way, through bounded channels; acknowledgements flow back
//! through the readings' [`reading::Ack`] tokens:
//!
//! ```text
//! sources/mqtt   ──┐                ┌─► rules (engine ─► alarm store ─► MQTT, SSE, InfluxDB)
//!   (decode)       ├──► router ─────┤
//! sources/modbus ──┘   (registry)   └─► sink: batcher ─► appender ─► spool (disk) ─► writer ─► InfluxDB
//!   (map)                                               │ fsync
//!      ▲                                                ▼
//!      └──── PUBACK when every Ack clone is dropped (spool fsync and alarm store commit)
//! ```
//!
//! - `reading`   — `Reading`, the one normalized type; the five kinds and their fields;
//!   `Ack`, the acknowledgement token a reading of a QoS 1 message carries.
//! - `data_dir`  — `gateway.data_dir`: one gateway per directory (a lock file), files owned by its owner.
//! - `config`    — the TOML file, `CAMPUSGW__…` overrides, secrets, validation with key paths and lines
//!   (every type, unknown-key and semantic problem of a file in one run: `config::collect`).
//! - `sources/`  — tasks that own a connection and send `Reading`s: `mqtt` (manual, in-order acknowledgements; `decode` is pure);
//!   `modbus` (one task per TCP device, one per serial line; `modbus::map` is pure:
//!   register maps → coalesced read requests → fields; `modbus::transport` is the wire).
//! - `router`    — admits readings through the `registry` and fans them out.
//! - `rules/`    — the rules (`condition`, `calendar`, pure), the `engine` (pure: readings,
//!   ticks and commands in, alarm changes out) and the `task` that persists and announces them.
//! - `alarms/`   — the alarm vocabulary (`change`: `Change`, `Event`, `Command`, `Suppression`),
//!   the ISA-18.2 `lifecycle` (pure), the durable `store`, the CSV `ledger` and MQTT `publish`;
//!   `AlarmView`, the one outside shape of an alarm. `rules` depends on `alarms`, never back.
//! - `notify/`   — duty alerts: the `roster` and routing/escalation (`policy`, both pure), the
//!   `channel`s (webhook, WeCom, DingTalk, Feishu, SMS over HTTP; email over SMTP), the durable
//!   `outbox` in `notify.db`, the one-time tokens of ack links (`ack`) and the notifier `task`
//!   that follows the alarm ledger on a thread of its own.
//! - `bus/`      — school-bus route compliance: the route file (`routes`: GeoJSON, GCJ-02/BD-09
//!   converted once, a local plane in metres), the per-bus `check`er (pure, on the fixes' own time),
//!   `trip`s and their `store` (`buses.db`), the `report`, the `task` that raises each episode as an
//!   alarm through the rules task (`Command::Device`) and sends `bus_episode` points to the sink.
//! - `registry`  — declared and seen devices, their places, last readings, online state.
//! - `sink/`     — line protocol, the write-ahead disk spool (`spool`: segments,
//!   CRC, cursor, drop-oldest), and writing to InfluxDB (v1 and v2) from it with retries;
//!   `bisect` finds the lines of a refused batch the database refuses, so only they are dropped.
//! - `web/`      — axum: `/healthz`, `/metrics`, the status page and its API, users and tokens (`auth`),
//!   the sign-in throttle and hashing pool (`signin`), connection and stream caps and timeouts (`limits`),
//!   the event stream (`stream`), the ack-link pages `/ack/{token}` (`ack`); every JSON body
//!   the API answers with is a type in `views`.
//! - `telemetry/`— logs, Prometheus metrics, component health.
//! - `demo/`     — `campusgw demo`: the built-in broker on loopback, a simulated campus, and simulated
//!   Modbus devices (tokio-modbus servers; the Modbus benchmark reuses them);
//!   `campusgw simulate` (`simulate`): the simulated devices towards any broker.
//! - `app`       — wiring, the alarm path's own thread (MQTT source, router, rules,
//!   alarm publication, sink batcher; the web and the InfluxDB writer run on the
//!   shared workers), and ordered shutdown.
//! - `memory`    — glibc malloc tuning that keeps the resident memory small.
//! - `counts`    — a total and a count per key, for the web's and the broker's connection caps.
//! - `backup`    — `campusgw backup`: SQLite online backup of the data directory's stores.
//! - `broker/`   — the built-in MQTT 3.1.1 broker (`[mqtt.embedded_broker]`, and the demo's):
//!   accounts and topic grants (`acl`), sessions and routing (`state`, pure), `broker.db`
//!   (`store`), one connection (`conn`). The gateway's own connections reach it on an internal
//!   loopback port, so the sources and the alarm publisher are the same as with any broker.
//!
//! # Invariants
//!
//! - `reading`, `sources::decode`, `sources::modbus::map`, `sink::line_protocol`,
//!   `sink::bisect`, `rules::{condition, calendar, engine}`, `alarms::{change, lifecycle}` and
//!   `bus::{routes, check, trip, report, trace}`, `broker::state` do no I/O and never spawn (`bus::Plan::new` reads the route file).
//! - Only `sources/` knows topics, payloads and registers; only `sink/` knows line protocol
//!   and the spool's format; only `web/` knows response shapes (and `alarms::AlarmView`,
//!   the one outside shape of an alarm, shared by the API, the stream and MQTT).
//! - Components never call each other: they share channels and read-only
//!   state (`Registry`, `Metrics`, `Health`). The router is the registry's only writer;
//!   the rules task is the alarm store's only writer (the bus task's alarms go through it);
//!   the bus task is `buses.db`'s only writer.
//! - Every queue is bounded; a full queue makes its producer wait, never grow.
//!   The MQTT source holds at most `sources::mqtt::UNACKED_MAX` messages
//!   unacknowledged, whatever window the broker keeps.
//!   A backlog towards InfluxDB lives in the spool on disk, bounded by
//!   `gateway.spool_max_mb`; past it the oldest data is dropped, counted and
//!   shown — never silently.
//! - With the built-in broker, a device's QoS 1 message is acknowledged to it
//!   only once `broker.db` holds it for every persistent session it is queued
//!   for (or the subscriber acknowledged it first); only the gateway publishes
//!   `campusgw/…`.
//! - Acknowledge after persist: a QoS 1 message is acknowledged to the broker
//!   only when every holder of its `Ack` has made it durable (the spool's
//!   fsync, the alarm store's commit and WAL sync). Whoever gives a reading up without
//!   persisting it calls `Ack::abandon` so the broker sends it again.
//!   Redelivered duplicates are harmless: a point's identity (measurement,
//!   tags, time) makes the rewrite idempotent.
//! - An alarm change is in the alarm store before anyone hears of it.
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
pub mod backup;
pub mod broker;
pub mod bus;
pub mod config;
pub mod counts;
pub mod data_dir;
pub mod demo;
pub mod memory;
pub mod notify;
pub mod reading;
pub mod registry;
pub mod router;
pub mod rules;
pub mod sink;
pub mod sources;
pub mod telemetry;
pub mod web;
