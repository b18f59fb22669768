//! Semantic checks that serde cannot express: every problem is collected,
//! with its key path, so `campusgw check` prints them all at once.

use std::collections::HashSet;

use super::{is_valid_id, Config, InfluxApi, Secret};

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
        if !g.spool_fsync {
            warns.push((
                "gateway.spool_fsync".into(),
                "is off: a power cut can lose messages that were already acknowledged".into(),
            ));
        }

        let m = &self.mqtt;
        match m.url.split_once("://") {
            Some(("mqtt" | "tcp" | "mqtts" | "ssl", rest)) if !rest.is_empty() => {
                if crate::sources::mqtt::parse_url(&m.url).is_err() {
                    err("mqtt.url", format!("`{}` is not host:port", m.url));
                }
            }
            _ => err(
                "mqtt.url",
                format!(
                    "`{}` must look like mqtt://host:1883 or mqtts://host:8883",
                    m.url
                ),
            ),
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
                    err(&at("site"), "may hold only letters, digits, - and _".into());
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

        let f = &self.influx;
        match &f.url {
            None => warns.push((
                "influx.url".into(),
                "no InfluxDB is configured: readings are not stored".into(),
            )),
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => err(
                "influx.url",
                format!("`{u}` must start with http:// or https://"),
            ),
            Some(u) if reqwest::Url::parse(u).is_err() => {
                err("influx.url", format!("`{u}` is not a valid URL"))
            }
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
        for (i, d) in self.devices.iter().enumerate() {
            if !is_valid_id(&d.id) {
                err(
                    &format!("devices[{i}].id"),
                    format!("`{}` may hold only letters, digits, - and _", d.id),
                );
            }
            if !is_valid_id(&d.site) {
                err(
                    &format!("devices[{i}].site"),
                    format!("`{}` may hold only letters, digits, - and _", d.site),
                );
            }
            if !seen.insert((d.site.as_str(), d.id.as_str())) {
                err(
                    &format!("devices[{i}].id"),
                    format!("device `{}` of site `{}` is declared twice", d.id, d.site),
                );
            }
        }
        if self.devices.len() > g.max_devices {
            err(
                "gateway.max_devices",
                format!("is below the {} declared devices", self.devices.len()),
            );
        }
        Findings {
            errors: errs,
            warnings: warns,
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
