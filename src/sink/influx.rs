//! Writing line-protocol batches to InfluxDB over either API.
//!
//! v2 goes through the `influxdb2` crate (`/api/v2/write`, org, bucket,
//! token); v1 is a plain `POST /write` (database, retention policy, basic
//! auth), which the crate does not speak. Both send gzip bodies: the crate
//! only compresses its own data points, so the reqwest client it is built on
//! carries the `Content-Encoding` header and we compress the line protocol.

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_ENCODING};

use crate::config::{InfluxApi, InfluxConfig};
use crate::telemetry::metrics::WriteErrorKind;
use crate::telemetry::redact_urls;

/// Why a configuration could not become a writer.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// `influx.url` is missing or invalid (the URL is held redacted).
    #[error("influx.url `{0}` is not a valid http(s) URL")]
    Url(String),
    /// A secret could not be read.
    #[error("influx.{key}: {message}")]
    Secret {
        /// Which key.
        key: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A failed write, classified by what should happen next.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct WriteError {
    /// Retry soon (network, server), later (config) or never (rejected).
    pub kind: WriteErrorKind,
    /// What the database or the network said.
    pub detail: String,
}

enum Api {
    V2 {
        client: influxdb2::Client,
        org: String,
        bucket: String,
    },
    V1 {
        client: reqwest::Client,
        url: reqwest::Url,
        username: Option<String>,
        password: Option<String>,
    },
}

/// A configured InfluxDB endpoint.
pub struct InfluxWriter {
    api: Api,
    gzip: bool,
    /// Where we write, for logs: never includes credentials.
    pub target: String,
}

impl std::fmt::Debug for InfluxWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxWriter")
            .field("target", &self.target)
            .finish()
    }
}

impl InfluxWriter {
    /// Builds a writer; `None` when no `influx.url` is configured.
    pub fn new(cfg: &InfluxConfig) -> Result<Option<Self>, SinkError> {
        let Some(url) = &cfg.url else {
            return Ok(None);
        };
        // Shown in logs and on /healthz: never with its credentials.
        let shown = redact_urls(url).into_owned();
        let base = reqwest::Url::parse(url).map_err(|_| SinkError::Url(shown.clone()))?;
        let mut headers = HeaderMap::new();
        if cfg.gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let builder = || {
            reqwest::Client::builder()
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
                .tcp_nodelay(true)
                .default_headers(headers.clone())
        };
        let secret = |key: &'static str, s: &Option<crate::config::Secret>| {
            s.as_ref()
                .map(|s| {
                    s.resolve()
                        .map_err(|message| SinkError::Secret { key, message })
                })
                .transpose()
        };
        let (api, target) = match cfg.api {
            InfluxApi::V2 => {
                let org = cfg.org.clone().unwrap_or_default();
                let bucket = cfg.bucket.clone().unwrap_or_default();
                let token = secret("token", &cfg.token)?.unwrap_or_default();
                let client = influxdb2::ClientBuilder::with_builder(builder(), url, &org, token)
                    .build()
                    .map_err(|e| SinkError::Client(e.to_string()))?;
                let target = format!("{shown} (v2, org {org}, bucket {bucket})");
                (
                    Api::V2 {
                        client,
                        org,
                        bucket,
                    },
                    target,
                )
            }
            InfluxApi::V1 => {
                let db = cfg.database.clone().unwrap_or_default();
                let mut write = base
                    .join("write")
                    .map_err(|_| SinkError::Url(shown.clone()))?;
                {
                    let mut q = write.query_pairs_mut();
                    q.append_pair("db", &db).append_pair("precision", "ms");
                    if let Some(rp) = &cfg.retention_policy {
                        q.append_pair("rp", rp);
                    }
                }
                let client = builder()
                    .build()
                    .map_err(|e| SinkError::Client(e.to_string()))?;
                let target = format!("{shown} (v1, database {db})");
                let api = Api::V1 {
                    client,
                    url: write,
                    username: cfg.username.clone(),
                    password: secret("password", &cfg.password)?,
                };
                (api, target)
            }
        };
        Ok(Some(Self {
            api,
            gzip: cfg.gzip,
            target,
        }))
    }

    /// Whether request bodies are gzip-compressed ([`request_body`]).
    pub fn gzip(&self) -> bool {
        self.gzip
    }

    /// Sends one body made by [`request_body`].
    pub async fn write(&self, body: Bytes) -> Result<(), WriteError> {
        match &self.api {
            Api::V2 {
                client,
                org,
                bucket,
            } => client
                .write_line_protocol_with_precision(
                    org,
                    bucket,
                    body,
                    influxdb2::api::write::TimestampPrecision::Milliseconds,
                )
                .await
                .map_err(|e| match e {
                    influxdb2::RequestError::Http { status, text } => {
                        classify(status.as_u16(), &text)
                    }
                    other => WriteError {
                        kind: WriteErrorKind::Network,
                        detail: redact_urls(&other.to_string()).into_owned(),
                    },
                }),
            Api::V1 {
                client,
                url,
                username,
                password,
            } => {
                let mut req = client.post(url.clone()).body(body);
                if let Some(u) = username {
                    req = req.basic_auth(u, password.as_deref());
                }
                let resp = req.send().await.map_err(|e| WriteError {
                    kind: WriteErrorKind::Network,
                    detail: redact_urls(&e.to_string()).into_owned(),
                })?;
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    return Ok(());
                }
                let text = resp.text().await.unwrap_or_default();
                Err(classify(status, &text))
            }
        }
    }
}

fn classify(status: u16, text: &str) -> WriteError {
    let kind = match status {
        401 | 403 | 404 => WriteErrorKind::Config,
        400 | 413 | 422 => WriteErrorKind::Rejected,
        _ => WriteErrorKind::Server,
    };
    let text: String = text.trim().chars().take(300).collect();
    let hint = match status {
        401 | 403 => " — check influx.token (v2) or influx.username/password (v1)",
        404 => " — check influx.org and influx.bucket (v2) or that influx.database exists (v1)",
        _ => "",
    };
    WriteError {
        kind,
        detail: format!("InfluxDB answered {status}: {text}{hint}"),
    }
}

/// Turns line protocol into a request body, gzip-compressed when `gzip`.
/// Milliseconds of CPU for a full batch: call it off the async workers.
pub fn request_body(lines: &[u8], gzip: bool) -> Bytes {
    if !gzip {
        return Bytes::copy_from_slice(lines);
    }
    // Level 1: line protocol compresses ~8x even at the fastest level, and CPU is the budget.
    let mut enc = GzEncoder::new(Vec::with_capacity(lines.len() / 6), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(lines);
    Bytes::from(enc.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(401, "unauthorized").kind, WriteErrorKind::Config);
        assert!(classify(401, "").detail.contains("influx.token"));
        assert_eq!(classify(404, "").kind, WriteErrorKind::Config);
        assert_eq!(
            classify(400, "partial write").kind,
            WriteErrorKind::Rejected
        );
        assert_eq!(classify(503, "").kind, WriteErrorKind::Server);
        assert_eq!(classify(429, "").kind, WriteErrorKind::Server);
    }
}
