//! Semantic checks that serde cannot express: every problem is collected,
//! with its key path, so `campusgw check` prints them all at once.

use std::collections::HashSet;
use std::time::Duration;

use super::{
    is_valid_id, Config, DeviceConfig, InfluxApi, ModbusTransport, RegisterConfig, Secret,
};
use crate::reading::Kind;
use crate::sources::modbus::map::{PROTOCOL_MAX_BITS, PROTOCOL_MAX_REGISTERS};
use crate::telemetry::redact::{has_credentials, redact_urls};

/// Problems found by `validate`, each as (key path, message).
#[derive(Debug, Default)]
pub struct Findings {
    /// Make the configuration unusable.
    pub errors: Vec<(String, String)>,
    /// Usable, but worth a look.
    pub warnings: Vec<(String, String)>,
}

impl Config {
    /// Every semantic problem, errors and warnings.
    pub fn validate(&self) -> Findings {
        let mut errs = Vec::new();
        let mut warns = Vec::new();
        let mut err = |p: &str, m: String| errs.push((p.to_owned(), m));

        let g = &self.gateway;
        if g.max_devices == 0 {
            err("gateway.max_devices", "must be at least 1".into());
        }
        if g.max_payload_bytes < 64 {
            err("gateway.max_payload_bytes", "must be at least 64".into());
        }
        if !(1..=1000).contains(&g.max_fields) {
            err("gateway.max_fields", "must be 1 to 1000".into());
        }
        if !(16..=65_536).contains(&g.max_string_bytes) {
            err("gateway.max_string_bytes", "must be 16 to 65536".into());
        }
        if g.queue_capacity == 0 {
            err("gateway.queue_capacity", "must be at least 1".into());
        }
        if g.spool_max_mb == 0 || g.spool_max_mb > 1024 * 1024 {
            err(
                "gateway.spool_max_mb",
                "must be 1 to 1048576 (MiB of disk for the spool)".into(),
            );
        }
        if g.spool_sync_interval > std::time::Duration::from_secs(1) {
            err(
                "gateway.spool_sync_interval",
                "must be at most 1s: every acknowledgement waits for it".into(),
            );
        }
        for (key, d) in [
            ("gateway.max_ts_past", g.max_ts_past),
            ("gateway.max_ts_future", g.max_ts_future),
            ("gateway.shutdown_timeout", g.shutdown_timeout),
        ] {
            if d.is_zero() {
                err(key, "must be above zero".into());
            }
        }
        if !g.spool_fsync {
            warns.push((
                "gateway.spool_fsync".into(),
                "is off: a power cut can lose messages that were already acknowledged".into(),
            ));
        }

        let m = &self.mqtt;
        if let Some(b) = &m.embedded_broker {
            if !m.url.is_empty() {
                err(
                    "mqtt.url",
                    "is set with [mqtt.embedded_broker]: the gateway is its own broker, remove url"
                        .into(),
                );
            }
            validate_broker(b, &mut err);
        } else {
            match m.url.split_once("://") {
                Some(("mqtt" | "tcp" | "mqtts" | "ssl", rest)) if !rest.is_empty() => {
                    if let Err(e) = crate::sources::mqtt::parse_url(&m.url) {
                        err(
                            "mqtt.url",
                            format!("`{}` is not host:port: {e}", redact_urls(&m.url)),
                        );
                    }
                }
                _ => err(
                    "mqtt.url",
                    format!(
                        "`{}` must look like mqtt://host:1883 or mqtts://host:8883",
                        redact_urls(&m.url)
                    ),
                ),
            }
        }
        let tls_scheme = m.url.starts_with("mqtts://") || m.url.starts_with("ssl://");
        if let Some(tls) = &m.tls {
            if !tls_scheme {
                err("mqtt.tls", "is set but mqtt.url is not mqtts://".into());
            }
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                err(
                    "mqtt.tls",
                    "client_cert_file and client_key_file go together".into(),
                );
            }
        }
        if m.client_id.is_empty() || m.client_id.len() > 64 {
            err("mqtt.client_id", "must be 1 to 64 characters".into());
        }
        if m.password.is_some() && m.username.is_none() {
            err("mqtt.password", "is set without mqtt.username".into());
        }
        if m.keep_alive.is_zero() {
            // MQTT reads 0 as "no keep-alive" (a dead link unnoticed); the source
            // would quietly use 5s instead, which is not what the file says.
            err(
                "mqtt.keep_alive",
                "must be above zero (5s at least; 30s is usual)".into(),
            );
        }
        if m.reconnect_min.is_zero() || m.reconnect_min > m.reconnect_max {
            err(
                "mqtt.reconnect_min",
                "must be above zero and at most mqtt.reconnect_max".into(),
            );
        }
        if m.topics.is_empty() {
            err("mqtt.topics", "needs at least one topic".into());
        }
        for (i, t) in m.topics.iter().enumerate() {
            let at = |k: &str| format!("mqtt.topics[{i}].{k}");
            if t.qos > 1 {
                err(&at("qos"), "must be 0 or 1".into());
            }
            match crate::sources::decode::TopicPattern::parse(&t.pattern) {
                Ok(p) => {
                    if !p.has("site") && t.site.is_none() {
                        err(
                            &at("site"),
                            "is needed when the pattern has no {site}".into(),
                        );
                    }
                    if !p.has("kind") && t.kind.is_none() {
                        err(
                            &at("kind"),
                            "is needed when the pattern has no {kind}".into(),
                        );
                    }
                }
                Err(e) => err(&at("pattern"), e),
            }
            if let Some(f) = &t.subscribe {
                if !valid_filter(f) {
                    err(
                        &at("subscribe"),
                        format!("`{f}` is not a valid MQTT topic filter"),
                    );
                }
            }
            if let Some(s) = &t.site {
                if !is_valid_id(s) {
                    err(&at("site"), super::ID_RULE.into());
                }
            }
            if !t.ts_field.is_empty() && !t.ts_field.starts_with('/') {
                err(&at("ts_field"), "must be a JSON pointer such as /ts".into());
            }
            for (name, f) in &t.fields {
                if !f.pointer.starts_with('/') {
                    err(
                        &format!("mqtt.topics[{i}].fields.{name}.pointer"),
                        "must be a JSON pointer such as /data/temp".into(),
                    );
                }
                if !f.scale.is_finite() || !f.offset.is_finite() {
                    err(
                        &format!("mqtt.topics[{i}].fields.{name}"),
                        "scale and offset must be finite".into(),
                    );
                }
            }
        }
        if matches!(m.password, Some(Secret::Inline(_))) {
            warns.push(("mqtt.password".into(), INLINE_SECRET.into()));
        }

        let w = &self.web;
        for (k, d) in [
            ("first_request_timeout", w.first_request_timeout),
            ("header_timeout", w.header_timeout),
            ("idle_timeout", w.idle_timeout),
        ] {
            if d.is_zero() {
                err(&format!("web.{k}"), "must be above zero".into());
            }
        }
        if w.idle_timeout < Duration::from_secs(20) {
            warns.push((
                "web.idle_timeout".into(),
                "is below 20 s: a quiet event stream (a keep-alive every 15 s) would be closed and reconnect".into(),
            ));
        }
        for (k, n) in [
            ("max_connections", w.max_connections),
            ("max_connections_per_address", w.max_connections_per_address),
            ("max_streams_per_session", w.max_streams_per_session),
            ("max_streams_per_address", w.max_streams_per_address),
        ] {
            if n == 0 {
                err(&format!("web.{k}"), "must be at least 1".into());
            }
        }

        let f = &self.influx;
        match &f.url {
            None => warns.push((
                "influx.url".into(),
                "no InfluxDB is configured: readings are not stored".into(),
            )),
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => err(
                "influx.url",
                format!("`{}` must start with http:// or https://", redact_urls(u)),
            ),
            Some(u) if reqwest::Url::parse(u).is_err() => err(
                "influx.url",
                format!("`{}` is not a valid URL", redact_urls(u)),
            ),
            Some(_) => match f.api {
                InfluxApi::V2 => {
                    for (k, v) in [("org", &f.org), ("bucket", &f.bucket)] {
                        if v.as_deref().is_none_or(str::is_empty) {
                            err(&format!("influx.{k}"), "is needed for api = \"v2\"".into());
                        }
                    }
                    if f.token.is_none() {
                        err("influx.token", "is needed for api = \"v2\"".into());
                    }
                }
                InfluxApi::V1 => {
                    if f.database.as_deref().is_none_or(str::is_empty) {
                        err("influx.database", "is needed for api = \"v1\"".into());
                    }
                    if f.password.is_some() && f.username.is_none() {
                        err("influx.password", "is set without influx.username".into());
                    }
                }
            },
        }
        if f.url.as_deref().is_some_and(has_credentials) {
            warns.push((
                "influx.url".into(),
                "carries credentials; they are hidden in logs and /healthz, but belong in influx.username and influx.password (v1) or influx.token (v2), as { env = \"VAR\" } or { file = \"/path\" }".into(),
            ));
        }
        for (k, s) in [("token", &f.token), ("password", &f.password)] {
            if matches!(s, Some(Secret::Inline(_))) {
                warns.push((format!("influx.{k}"), INLINE_SECRET.into()));
            }
        }
        if f.batch_size == 0 || f.batch_size > 100_000 {
            err("influx.batch_size", "must be 1 to 100000".into());
        }
        if f.flush_interval.is_zero() {
            err("influx.flush_interval", "must be above zero".into());
        }
        if f.timeout.is_zero() {
            err("influx.timeout", "must be above zero".into());
        }
        if f.retry_min.is_zero() || f.retry_min > f.retry_max {
            err(
                "influx.retry_min",
                "must be above zero and at most influx.retry_max".into(),
            );
        }
        if f.max_pending_batches.is_some() {
            warns.push((
                "influx.max_pending_batches".into(),
                "has no effect any more: batches wait in the disk spool (gateway.spool_max_mb); remove it".into(),
            ));
        }

        let mut seen = HashSet::new();
        // Those of `devices_file` were checked as it was read, with its lines.
        let from_toml = self.devices.len() - self.devices_from_file;
        for (i, d) in self.devices[..from_toml].iter().enumerate() {
            for (key, message) in device_problems(d) {
                err(&format!("devices[{i}].{key}"), message);
            }
            if !seen.insert((d.site.as_str(), d.id.as_str())) {
                err(&format!("devices[{i}].id"), declared_twice(d));
            }
        }
        let a = &self.alarms;
        if a.flood_threshold == 1 {
            err(
                "alarms.flood_threshold",
                "must be 0 (off) or at least 2".into(),
            );
        }
        if a.flood_threshold > 0 && a.flood_window.is_zero() {
            err("alarms.flood_window", "must be above zero".into());
        }
        if a.mqtt_topic.contains(['+', '#']) {
            err("alarms.mqtt_topic", "may not contain MQTT wildcards".into());
        }
        if let Err(problems) = crate::rules::RuleSet::compile(self) {
            for (path, message) in problems {
                err(&path, message);
            }
        }
        if let Err(problems) = crate::notify::roster::Roster::new(self) {
            for (path, message) in problems {
                err(&path, message);
            }
        }
        if let Err(problems) = crate::notify::policy::Plan::new(self) {
            for (path, message) in problems {
                err(&path, message);
            }
        }
        let more = crate::notify::channel::email_problems(self)
            .into_iter()
            .chain(crate::bus::problems(self));
        for (path, message) in more {
            err(&path, message);
        }

        let inline_modbus = self
            .modbus
            .devices
            .iter()
            .filter(|d| d.device.is_none())
            .count();
        if self.devices.len() + inline_modbus > g.max_devices {
            err(
                "gateway.max_devices",
                format!(
                    "is below the {} declared devices",
                    self.devices.len() + inline_modbus
                ),
            );
        }
        self.validate_modbus(&mut err, &seen);
        Findings {
            errors: errs,
            warnings: warns,
        }
    }
}

impl Config {
    /// Every secret and key file the gateway will read at start, read now:
    /// an unset `{ env = … }` or an unreadable `{ file = … }` is an error of
    /// `check` (and `run` refuses to start) instead of a source that never
    /// comes up. Reads the process environment and the files, so it is
    /// part of `Config::load`, not of `validate`.
    pub fn secret_problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let secrets = [
            ("mqtt.password", &self.mqtt.password),
            ("influx.token", &self.influx.token),
            ("influx.password", &self.influx.password),
        ];
        for (key, secret) in secrets {
            if let Some(Err(message)) = secret.as_ref().map(Secret::resolve) {
                out.push((key.to_owned(), message));
            }
        }
        for (id, c) in &self.notify.channels {
            use super::ChannelKind as K;
            let secrets: Vec<(&str, Option<&Secret>)> = match &c.kind {
                K::Webhook { secret, .. } | K::Sms { secret, .. } => {
                    vec![("secret", secret.as_ref())]
                }
                K::Wecom { key, .. } => vec![("key", Some(key))],
                K::Dingtalk {
                    access_token,
                    secret,
                    ..
                } => vec![
                    ("access_token", Some(access_token)),
                    ("secret", Some(secret)),
                ],
                K::Feishu { hook, secret, .. } => {
                    vec![("hook", Some(hook)), ("secret", Some(secret))]
                }
                K::Email { user, password, .. } => {
                    vec![("user", user.as_ref()), ("password", password.as_ref())]
                }
            };
            for (field, secret) in secrets {
                if let Some(Err(message)) = secret.map(Secret::resolve) {
                    out.push((format!("notify.channels.{id}.{field}"), message));
                }
            }
        }
        let mut files = Vec::new();
        if let Some(b) = &self.mqtt.embedded_broker {
            if let Some(t) = &b.tls {
                files.push(("mqtt.embedded_broker.tls.cert_file", Some(&t.cert_file)));
                files.push(("mqtt.embedded_broker.tls.key_file", Some(&t.key_file)));
            }
            if let Some(f) = &b.users_file {
                match crate::broker::acl::UsersFile::load(f) {
                    Ok(users) if users.users.is_empty() && !b.allow_anonymous => out.push((
                        "mqtt.embedded_broker.users_file".into(),
                        format!("{} has no users: no device could connect (add one with `campusgw broker user add`)", f.display()),
                    )),
                    Ok(_) => {}
                    Err(e) => out.push(("mqtt.embedded_broker.users_file".into(), e.to_string())),
                }
            }
        }
        if let Some(t) = &self.mqtt.tls {
            files.push(("mqtt.tls.ca_file", Some(&t.ca_file)));
            files.push(("mqtt.tls.client_cert_file", t.client_cert_file.as_ref()));
            files.push(("mqtt.tls.client_key_file", t.client_key_file.as_ref()));
        }
        let mut ca_keys = Vec::new();
        for (id, c) in &self.notify.channels {
            if let super::ChannelKind::Email {
                ca_file: Some(f), ..
            } = &c.kind
            {
                ca_keys.push((format!("notify.channels.{id}.ca_file"), f));
            }
        }
        for (key, file) in ca_keys {
            if let Err(e) = std::fs::File::open(file) {
                out.push((key, format!("cannot read {}: {e}", file.display())));
            }
        }
        if let Some(t) = &self.web.tls {
            files.push(("web.tls.cert_file", Some(&t.cert_file)));
            files.push(("web.tls.key_file", Some(&t.key_file)));
        }
        for (key, file) in files {
            if let Some(Err(e)) = file.map(std::fs::File::open) {
                out.push((
                    key.to_owned(),
                    format!(
                        "cannot read {}: {e}",
                        file.map_or_else(String::new, |f| f.display().to_string())
                    ),
                ));
            }
        }
        out
    }

    /// The `[modbus]` section: timings, lines, maps, and each device's
    /// identity, endpoint and registers. `declared` holds (site, id) of `[[devices]]`.
    fn validate_modbus(
        &self,
        err: &mut impl FnMut(&str, String),
        declared: &HashSet<(&str, &str)>,
    ) {
        let m = &self.modbus;
        for (k, d) in [("poll_interval", m.poll_interval), ("timeout", m.timeout)] {
            if d.is_zero() {
                err(&format!("modbus.{k}"), "must be above zero".into());
            }
        }
        if m.offline_after_failures == 0 {
            err("modbus.offline_after_failures", "must be at least 1".into());
        }
        if !(2..=PROTOCOL_MAX_REGISTERS).contains(&m.max_registers_per_request) {
            err(
                "modbus.max_registers_per_request",
                format!("must be 2 to {PROTOCOL_MAX_REGISTERS}"),
            );
        }
        if !(1..=PROTOCOL_MAX_BITS).contains(&m.max_bits_per_request) {
            err(
                "modbus.max_bits_per_request",
                format!("must be 1 to {PROTOCOL_MAX_BITS}"),
            );
        }
        if m.reconnect_min.is_zero() || m.reconnect_min > m.reconnect_max {
            err(
                "modbus.reconnect_min",
                "must be above zero and at most modbus.reconnect_max".into(),
            );
        }
        for (name, l) in &m.lines {
            let at = |k: &str| format!("modbus.lines.{name}.{k}");
            if l.path.as_os_str().is_empty() {
                err(&at("path"), "must name a serial device".into());
            }
            if l.baud == 0 {
                err(&at("baud"), "must be above zero".into());
            }
            if !(5..=8).contains(&l.data_bits) {
                err(&at("data_bits"), "must be 5 to 8".into());
            }
            if !(1..=2).contains(&l.stop_bits) {
                err(&at("stop_bits"), "must be 1 or 2".into());
            }
        }
        for (name, map) in &m.maps {
            if map.registers.is_empty() {
                err(
                    &format!("modbus.maps.{name}.registers"),
                    "needs at least one register".into(),
                );
            }
            check_registers(
                &format!("modbus.maps.{name}"),
                &map.registers,
                map.kind,
                err,
            );
        }

        let mut ids: HashSet<&str> = HashSet::new();
        let mut units: HashSet<(&str, u8)> = HashSet::new();
        for (i, d) in m.devices.iter().enumerate() {
            let at = |k: &str| format!("modbus.devices[{i}].{k}");
            let identity = self.modbus_identity(d);
            match &d.device {
                Some(reference) => {
                    for (k, set) in [
                        ("id", d.id.is_some()),
                        ("kind", d.kind.is_some()),
                        ("building", d.building.is_some()),
                        ("floor", d.floor.is_some()),
                        ("room", d.room.is_some()),
                        ("name", d.name.is_some()),
                    ] {
                        if set {
                            err(
                                &at(k),
                                format!(
                                    "comes from the [[devices]] entry `{reference}`: set it there"
                                ),
                            );
                        }
                    }
                    if identity.is_none() {
                        err(
                            &at("device"),
                            format!("`{reference}` is not declared in [[devices]] (or several sites declare it: add `site`)"),
                        );
                    }
                }
                None => {
                    for (k, set) in [
                        ("id", d.id.is_some()),
                        ("kind", d.kind.is_some()),
                        ("site", d.site.is_some()),
                    ] {
                        if !set {
                            err(
                                &at(k),
                                "is needed when `device` does not name a [[devices]] entry".into(),
                            );
                        }
                    }
                    if let Some(id) = &d.id {
                        if !is_valid_id(id) {
                            err(&at("id"), format!("`{id}` {}", super::ID_RULE));
                        }
                    }
                    if let Some(site) = &d.site {
                        if !is_valid_id(site) {
                            err(&at("site"), format!("`{site}` {}", super::ID_RULE));
                        }
                        if let Some(id) = &d.id {
                            if declared.contains(&(site.as_str(), id.as_str())) {
                                err(&at("id"), format!("`{id}` is also declared in [[devices]]: refer to it with `device = \"{id}\"`"));
                            }
                        }
                    }
                }
            }
            // Health components and metric labels are keyed by id alone.
            let id = d.device.as_deref().or(d.id.as_deref());
            if let Some(id) = id {
                if !ids.insert(id) && d.device.is_none() {
                    err(
                        &at("id"),
                        format!("another Modbus device is also called `{id}`"),
                    );
                }
            }
            match d.transport {
                ModbusTransport::Tcp => {
                    match d.address.as_deref() {
                        None | Some("") => err(
                            &at("address"),
                            "is needed for transport = \"tcp\" (host:port)".into(),
                        ),
                        Some(a) if a.contains('/') || a.contains(' ') => {
                            err(&at("address"), format!("`{a}` is not host:port"))
                        }
                        Some(_) => {}
                    }
                    if d.line.is_some() {
                        err(&at("line"), "is for transport = \"rtu\"".into());
                    }
                }
                ModbusTransport::Rtu => {
                    match d.line.as_deref() {
                        None => err(&at("line"), "is needed for transport = \"rtu\"".into()),
                        Some(l) if !m.lines.contains_key(l) => {
                            err(&at("line"), format!("`{l}` is not in [modbus.lines]"))
                        }
                        Some(l) => {
                            if !units.insert((l, d.unit)) {
                                err(
                                    &at("unit"),
                                    format!("unit {} is already polled on line `{l}`", d.unit),
                                );
                            }
                        }
                    }
                    if !(1..=247).contains(&d.unit) {
                        err(&at("unit"), "must be 1 to 247 on a serial line".into());
                    }
                    if d.address.is_some() {
                        err(&at("address"), "is for transport = \"tcp\"".into());
                    }
                }
            }
            let kind = identity.as_ref().map(|w| w.kind);
            match (&d.map, d.registers.is_empty()) {
                (Some(_), false) => err(
                    &at("registers"),
                    "cannot go with `map`: use one or the other".into(),
                ),
                (None, true) => err(&at("map"), "or `registers` is needed".into()),
                (Some(name), true) => match m.maps.get(name) {
                    None => err(&at("map"), format!("`{name}` is not in [modbus.maps]")),
                    Some(map) => {
                        if let (Some(want), Some(have)) = (map.kind, kind) {
                            if want != have {
                                err(
                                    &at("map"),
                                    format!("`{name}` is for a {want}, the device is a {have}"),
                                );
                            }
                        } else if let Some(have) = kind {
                            // A map without a kind is checked against each device using it.
                            check_registers(&at("map"), &map.registers, Some(have), err);
                        }
                    }
                },
                (None, false) => {
                    check_registers(&format!("modbus.devices[{i}]"), &d.registers, kind, err)
                }
            }
            for (k, v) in [("poll_interval", d.poll_interval), ("timeout", d.timeout)] {
                if v.is_some_and(|v| v.is_zero()) {
                    err(&at(k), "must be above zero".into());
                }
            }
            if d.offline_after_failures == Some(0) {
                err(&at("offline_after_failures"), "must be at least 1".into());
            }
        }
    }
}

/// Each register's problems, and fields read twice.
fn check_registers(
    prefix: &str,
    registers: &[RegisterConfig],
    kind: Option<Kind>,
    err: &mut impl FnMut(&str, String),
) {
    let mut fields = HashSet::new();
    for (j, r) in registers.iter().enumerate() {
        let at = if prefix.ends_with(".map") {
            prefix.to_owned()
        } else {
            format!("{prefix}.registers[{j}]")
        };
        for message in crate::sources::modbus::map::check(r, kind) {
            err(&at, message);
        }
        if !fields.insert(r.field.as_str()) {
            err(&at, format!("field `{}` is read twice", r.field));
        }
    }
}

/// An MQTT filter: non-empty, `+` alone in its level, `#` alone and last.
fn valid_filter(f: &str) -> bool {
    let levels: Vec<&str> = f.split('/').collect();
    !f.is_empty()
        && levels.iter().enumerate().all(|(i, l)| match *l {
            "+" => true,
            "#" => i + 1 == levels.len(),
            l => !l.contains(['+', '#']),
        })
}

const INLINE_SECRET: &str =
    "is written inline; prefer { env = \"VAR\" } or { file = \"/path\" } so the file can be shared";

/// The problem of a second declaration of the same site and id.
pub(super) fn declared_twice(d: &DeviceConfig) -> String {
    format!("device `{}` of site `{}` is declared twice", d.id, d.site)
}

/// What is wrong with one device entry, as (key, message): shared by the
/// `[[devices]]` tables and `devices_file`.
pub(super) fn device_problems(d: &DeviceConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (key, value) in [("id", &d.id), ("site", &d.site)] {
        if !is_valid_id(value) {
            out.push((key, format!("`{value}` {}", super::ID_RULE)));
        }
    }
    // They become InfluxDB tag values: line protocol cannot carry a line
    // break, and a control character has no place on the page either.
    for (key, value) in [
        ("building", &d.building),
        ("floor", &d.floor),
        ("room", &d.room),
        ("name", &d.name),
    ] {
        if let Some(v) = value {
            if v.chars().any(char::is_control) || v.len() > 256 {
                out.push((
                    key,
                    "may not hold control characters (line breaks, tabs) or exceed 256 bytes"
                        .into(),
                ));
            }
        }
    }
    if d.heartbeat.is_some_and(|h| h < Duration::from_secs(1)) {
        out.push(("heartbeat", "must be at least 1s".into()));
    }
    out
}

/// `[mqtt.embedded_broker]`: listeners, who may connect, limits.
fn validate_broker(b: &super::BrokerConfig, err: &mut impl FnMut(&str, String)) {
    let at = |k: &str| format!("mqtt.embedded_broker.{k}");
    let listeners: Vec<std::net::SocketAddr> = b
        .listen
        .iter()
        .copied()
        .chain(b.tls.as_ref().map(|t| t.listen))
        .collect();
    if listeners.is_empty() {
        err(
            "mqtt.embedded_broker",
            "needs listen = \"0.0.0.0:1883\" or [mqtt.embedded_broker.tls]".into(),
        );
    }
    if b.allow_anonymous {
        if let Some(open) = listeners.iter().find(|a| !a.ip().is_loopback()) {
            err(
                &at("allow_anonymous"),
                format!("is only for a broker on loopback; {open} is reachable from the network, so every client needs a user (users_file)"),
            );
        }
    } else if b.users_file.is_none() {
        err(
            &at("users_file"),
            "is needed: without it no device can connect (create it with `campusgw broker user add`)".into(),
        );
    }
    for (k, v) in [
        ("max_connections", b.max_connections),
        ("max_connections_per_address", b.max_connections_per_address),
        ("max_queued_messages", b.max_queued_messages),
        ("max_sessions", b.max_sessions),
        ("max_publish_rate", b.max_publish_rate as usize),
    ] {
        if v == 0 {
            err(&at(k), "must be at least 1".into());
        }
    }
    if !(1..=65_535).contains(&b.max_inflight) {
        err(&at("max_inflight"), "must be 1 to 65535".into());
    }
}
