//! The channels that carry a message to people: a generic webhook, the
//! WeCom, DingTalk and Feishu group robots, SMS through a provider's HTTP
//! API, and email over SMTP (lettre). Each builds its request (signed as its
//! peer requires) and reads the peer's answer into an [`Outcome`]: the three
//! robots answer HTTP 200 on failure too, so their body's `errcode`/`code`
//! decides; an SMTP server's 4xx is a retry, its 5xx permanent.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{ChannelConfig, ChannelKind, Config, SmtpSecurity};

/// At most this much of a peer's answer is kept (shown, stored).
const ANSWER_MAX: usize = 512;

/// One message to send.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// One line: severity and what (`【紧急】烟感报警`).
    pub title: String,
    /// The whole text: what, where in words, the value, the local time, the link.
    pub text: String,
    /// Mobile numbers to @-mention (DingTalk `atMobiles`, WeCom `mentioned_mobile_list`).
    pub mobiles: Vec<String>,
    /// The SMS recipient.
    pub phone: Option<String>,
    /// The email recipient.
    pub email: Option<String>,
    /// The same key for every attempt of this message: a receiver that
    /// counts it can tell a retry from a new message.
    pub idempotency_key: String,
    /// Named parts for templates: `severity`, `what`, `where`, `value`, `time`, `link`.
    pub fields: BTreeMap<String, String>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer took it; its answer.
    Delivered(String),
    /// Try again later (network, 5xx, a rate limit).
    Retry(String),
    /// Trying again cannot help (a bad key or signature): shown to whoever
    /// can fix the configuration.
    Permanent(String),
}

/// A channel ready to send: its secrets resolved.
#[derive(Clone)]
pub struct Channel {
    /// The channel's id.
    pub id: String,
    kind: Kind,
    timeout: Duration,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Kind {
    Webhook {
        url: String,
        secret: Option<String>,
    },
    Wecom {
        url: String,
    },
    Dingtalk {
        url: String,
        secret: String,
    },
    Feishu {
        url: String,
        secret: String,
    },
    Sms {
        method: String,
        url: String,
        headers: BTreeMap<String, String>,
        body: String,
        secret: String,
    },
    Email(Box<Email>),
}

#[derive(Clone)]
struct Email {
    host: String,
    port: u16,
    security: SmtpSecurity,
    from: lettre::message::Mailbox,
    credentials: Option<(String, String)>,
    ca_pem: Option<Vec<u8>>,
}

/// `check`'s problems with the email channels: a sender that is not an
/// address, plain SMTP off this machine, a user without a password.
pub fn email_problems(cfg: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (id, c) in &cfg.notify.channels {
        let ChannelKind::Email {
            host,
            security,
            from,
            user,
            password,
            ..
        } = &c.kind
        else {
            continue;
        };
        let key = |k: &str| format!("notify.channels.{id}.{k}");
        if let Err(e) = from.parse::<lettre::message::Mailbox>() {
            out.push((
                key("from"),
                format!("`{from}` is not an email address: {e}"),
            ));
        }
        if *security == SmtpSecurity::Plain && !is_loopback(host) {
            out.push((
                key("security"),
                format!("`plain` sends passwords and alarms readable on the network; only to a relay on this machine (127.0.0.1, ::1, localhost), not `{host}`: use `starttls` or `tls`"),
            ));
        }
        if user.is_some() != password.is_some() {
            out.push((key("user"), "`user` and `password` go together".into()));
        }
    }
    out
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Channel {
    /// Resolves a configured channel's secrets.
    pub fn new(id: &str, cfg: &ChannelConfig) -> Result<Self, String> {
        let secret = |s: &crate::config::Secret, what: &str| {
            s.resolve()
                .map_err(|e| format!("notify.channels.{id}.{what}: {e}"))
        };
        let join = |base: &str, tail: &str| format!("{}/{}", base.trim_end_matches('/'), tail);
        let kind = match &cfg.kind {
            ChannelKind::Webhook { url, secret: s } => Kind::Webhook {
                url: url.clone(),
                secret: s.as_ref().map(|s| secret(s, "secret")).transpose()?,
            },
            ChannelKind::Wecom { url, key } => Kind::Wecom {
                url: with_query(url, &[("key", &secret(key, "key")?)])?,
            },
            ChannelKind::Dingtalk {
                url,
                access_token,
                secret: s,
            } => Kind::Dingtalk {
                url: with_query(
                    url,
                    &[("access_token", &secret(access_token, "access_token")?)],
                )?,
                secret: secret(s, "secret")?,
            },
            ChannelKind::Feishu {
                url,
                hook,
                secret: s,
            } => Kind::Feishu {
                url: join(url, &secret(hook, "hook")?),
                secret: secret(s, "secret")?,
            },
            ChannelKind::Sms {
                method,
                url,
                headers,
                body,
                secret: s,
            } => Kind::Sms {
                method: method.to_ascii_uppercase(),
                url: url.clone(),
                headers: headers.clone(),
                body: body.clone(),
                secret: s
                    .as_ref()
                    .map(|s| secret(s, "secret"))
                    .transpose()?
                    .unwrap_or_default(),
            },
            ChannelKind::Email {
                host,
                port,
                security,
                from,
                user,
                password,
                ca_file,
            } => {
                let credentials = match (user, password) {
                    (Some(u), Some(p)) => Some((secret(u, "user")?, secret(p, "password")?)),
                    (None, None) => None,
                    _ => {
                        return Err(format!(
                            "notify.channels.{id}: `user` and `password` go together"
                        ))
                    }
                };
                let ca_pem = ca_file
                    .as_ref()
                    .map(|f| {
                        std::fs::read(f).map_err(|e| {
                            format!(
                                "notify.channels.{id}.ca_file: cannot read {}: {e}",
                                f.display()
                            )
                        })
                    })
                    .transpose()?;
                Kind::Email(Box::new(Email {
                    host: host.clone(),
                    port: port.unwrap_or(match security {
                        SmtpSecurity::Starttls => 587,
                        SmtpSecurity::Tls => 465,
                        SmtpSecurity::Plain => 25,
                    }),
                    security: *security,
                    from: from
                        .parse()
                        .map_err(|e| format!("notify.channels.{id}.from: `{from}`: {e}"))?,
                    credentials,
                    ca_pem,
                }))
            }
        };
        Ok(Self {
            id: id.to_owned(),
            kind,
            timeout: cfg.timeout,
        })
    }

    /// Sends one message (one attempt); `now_ms` signs the robots' requests.
    pub async fn send(&self, client: &reqwest::Client, msg: &Message, now_ms: i64) -> Outcome {
        if let Kind::Email(e) = &self.kind {
            return self.send_email(e, msg).await;
        }
        let request = match self.request(client, msg, now_ms) {
            Ok(r) => r,
            Err(e) => return Outcome::Permanent(e),
        };
        let response = match request.timeout(self.timeout).send().await {
            Ok(r) => r,
            // Without the URL: a robot's key or token is in it.
            Err(e) => return Outcome::Retry(format!("no answer: {}", e.without_url())),
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let body = cut(&body);
        self.judge(status, &body)
    }

    async fn send_email(&self, e: &Email, msg: &Message) -> Outcome {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

        let fix = format!("notify.channels.{}", self.id);
        let Some(to) = msg.email.as_deref() else {
            return Outcome::Permanent(
                "the person has no email address ([[notify.people]] email)".into(),
            );
        };
        let to: lettre::message::Mailbox = match to.parse() {
            Ok(m) => m,
            Err(err) => {
                return Outcome::Permanent(format!(
                    "`{to}` is not an email address ([[notify.people]] email): {err}"
                ))
            }
        };
        // A Message-ID from the idempotency key: every attempt of a message
        // carries the same one, so a mail system can drop a repeat.
        let digest = sha2::Digest::finalize(<Sha256 as sha2::Digest>::new_with_prefix(
            msg.idempotency_key.as_bytes(),
        ));
        let mut body = format!("{}\n\n{}\n", msg.title, msg.text);
        if body.contains('\r') {
            body = body.replace('\r', "");
        }
        let email = lettre::Message::builder()
            .from(e.from.clone())
            .to(to)
            .subject(msg.title.clone())
            .message_id(Some(format!("<{}@campusgw>", hex(&digest[..16]))))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body);
        let email = match email {
            Ok(m) => m,
            Err(err) => return Outcome::Permanent(format!("cannot build the email: {err}")),
        };
        let tls = || {
            let mut b = TlsParameters::builder(e.host.clone());
            if let Some(pem) = &e.ca_pem {
                b = b.add_root_certificate(Certificate::from_pem(pem)?);
            }
            b.build()
        };
        let tls = match e.security {
            SmtpSecurity::Plain => Ok(Tls::None),
            SmtpSecurity::Starttls => tls().map(Tls::Required),
            SmtpSecurity::Tls => tls().map(Tls::Wrapper),
        };
        let tls = match tls {
            Ok(t) => t,
            Err(err) => return Outcome::Permanent(format!("{fix}.ca_file: {err}")),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(e.host.as_str())
            .port(e.port)
            .tls(tls)
            .timeout(Some(self.timeout));
        if let Some((u, p)) = &e.credentials {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        let transport = builder.build();
        // The per-command timeout bounds each step; this bounds the whole dialogue.
        let sent =
            tokio::time::timeout(self.timeout.saturating_mul(4), transport.send(email)).await;
        match sent {
            Err(_) => Outcome::Retry(format!("SMTP {}:{}: no answer in time", e.host, e.port)),
            Ok(Ok(r)) => Outcome::Delivered(cut(&format!(
                "SMTP {} {}",
                r.code(),
                r.message().collect::<Vec<_>>().join(" ")
            ))),
            Ok(Err(err)) if err.is_permanent() => Outcome::Permanent(cut(&format!(
                "SMTP {err} (fix {fix}: from, user, password, or the person's email)"
            ))),
            // 4xx (busy, greylisted), no connection, TLS or a timeout: later.
            Ok(Err(err)) => Outcome::Retry(cut(&format!("SMTP {}:{}: {err}", e.host, e.port))),
        }
    }

    fn request(
        &self,
        client: &reqwest::Client,
        msg: &Message,
        now_ms: i64,
    ) -> Result<reqwest::RequestBuilder, String> {
        let json = |url: &str, body: serde_json::Value| {
            client
                .post(url)
                .header("Idempotency-Key", &msg.idempotency_key)
                .json(&body)
        };
        Ok(match &self.kind {
            Kind::Webhook { url, secret } => {
                let body = serde_json::json!({
                    "title": msg.title,
                    "text": msg.text,
                    "fields": msg.fields,
                    "idempotency_key": msg.idempotency_key,
                })
                .to_string();
                let mut req = client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header("Idempotency-Key", &msg.idempotency_key);
                if let Some(s) = secret {
                    req = req.header(
                        "X-Campusgw-Signature",
                        format!("sha256={}", hex(&hmac(s.as_bytes(), body.as_bytes()))),
                    );
                }
                req.body(body)
            }
            Kind::Wecom { url } => {
                // Only the text message type can @-mention by mobile number.
                let body = if msg.mobiles.is_empty() {
                    serde_json::json!({ "msgtype": "markdown", "markdown": { "content": format!("**{}**\n{}", msg.title, msg.text) } })
                } else {
                    serde_json::json!({ "msgtype": "text", "text": { "content": format!("{}\n{}", msg.title, msg.text), "mentioned_mobile_list": msg.mobiles } })
                };
                json(url, body)
            }
            Kind::Dingtalk { url, secret } => {
                let ts = now_ms.to_string();
                let sign = base64::engine::general_purpose::STANDARD.encode(hmac(
                    secret.as_bytes(),
                    format!("{ts}\n{secret}").as_bytes(),
                ));
                let url = with_query(url, &[("timestamp", &ts), ("sign", &sign)])?;
                let at: Vec<String> = msg.mobiles.iter().map(|m| format!("@{m}")).collect();
                let body = serde_json::json!({
                    "msgtype": "markdown",
                    "markdown": { "title": msg.title, "text": format!("### {}\n{}\n{}", msg.title, msg.text, at.join(" ")) },
                    "at": { "atMobiles": msg.mobiles, "isAtAll": false },
                });
                json(&url, body)
            }
            Kind::Feishu { url, secret } => {
                let ts = (now_ms / 1000).to_string();
                // Feishu signs an empty message with the key `timestamp\nsecret`.
                let sign = base64::engine::general_purpose::STANDARD
                    .encode(hmac(format!("{ts}\n{secret}").as_bytes(), b""));
                let body = serde_json::json!({
                    "timestamp": ts,
                    "sign": sign,
                    "msg_type": "text",
                    "content": { "text": format!("{}\n{}", msg.title, msg.text) },
                });
                json(url, body)
            }
            Kind::Sms {
                method,
                url,
                headers,
                body,
                secret,
            } => {
                let phone = msg
                    .phone
                    .as_deref()
                    .ok_or("the person has no phone number")?;
                let mut values = msg.fields.clone();
                values.insert("phone".into(), phone.to_owned());
                values.insert("text".into(), format!("{} {}", msg.title, msg.text));
                values.insert("secret".into(), secret.clone());
                let is_json = headers
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.contains("json"))
                    || body.trim_start().starts_with('{');
                let url = fill(url, &values, Escape::Url);
                let body = fill(
                    body,
                    &values,
                    if is_json { Escape::Json } else { Escape::None },
                );
                let method = reqwest::Method::from_bytes(method.as_bytes())
                    .map_err(|_| format!("`{method}` is not an HTTP method"))?;
                let mut req = client
                    .request(method, url)
                    .header("Idempotency-Key", &msg.idempotency_key);
                if is_json
                    && !headers
                        .keys()
                        .any(|k| k.eq_ignore_ascii_case("content-type"))
                {
                    req = req.header("Content-Type", "application/json");
                }
                for (k, v) in headers {
                    req = req.header(k, fill(v, &values, Escape::None));
                }
                if body.is_empty() {
                    req
                } else {
                    req.body(body)
                }
            }
            Kind::Email(_) => return Err("email is not an HTTP channel".into()),
        })
    }

    /// Reads a peer's answer.
    fn judge(&self, status: reqwest::StatusCode, body: &str) -> Outcome {
        let code = |key: &str| {
            serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get(key).and_then(serde_json::Value::as_i64))
        };
        let answer = format!("HTTP {} {body}", status.as_u16());
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Outcome::Retry(answer);
        }
        if !status.is_success() {
            // 4xx: the request is wrong (address, key): it will not get better.
            return Outcome::Permanent(answer);
        }
        match &self.kind {
            Kind::Webhook { .. } | Kind::Sms { .. } | Kind::Email(_) => Outcome::Delivered(answer),
            Kind::Wecom { .. } => match code("errcode") {
                Some(0) => Outcome::Delivered(answer),
                // 45009: over the robot's 20 a minute.
                Some(45009) => Outcome::Retry(answer),
                Some(_) | None => Outcome::Permanent(answer),
            },
            Kind::Dingtalk { .. } => match code("errcode") {
                Some(0) => Outcome::Delivered(answer),
                // 130101: sent too fast (the robot then blocks for 10 minutes).
                Some(130101) => Outcome::Retry(answer),
                Some(_) | None => Outcome::Permanent(answer),
            },
            Kind::Feishu { .. } => match code("code").or_else(|| code("StatusCode")) {
                Some(0) => Outcome::Delivered(answer),
                // 11232: frequency limited.
                Some(11232) => Outcome::Retry(answer),
                Some(_) | None => Outcome::Permanent(answer),
            },
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_query(url: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
    let mut u = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    u.query_pairs_mut().extend_pairs(pairs);
    Ok(u.to_string())
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(ANSWER_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[derive(Clone, Copy)]
enum Escape {
    None,
    Url,
    Json,
}

/// Fills `{name}` placeholders of a template, escaped for where they land.
fn fill(template: &str, values: &BTreeMap<String, String>, escape: Escape) -> String {
    let mut out = template.to_owned();
    for (k, v) in values {
        let v = match escape {
            Escape::None => v.clone(),
            Escape::Url => reqwest::Url::parse_with_params("x:", [("v", v)])
                .ok()
                .and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_owned()))
                .unwrap_or_default(),
            // The quotes come from the template: the value's inside of a JSON string.
            Escape::Json => {
                let s = serde_json::Value::String(v.clone()).to_string();
                s[1..s.len() - 1].to_owned()
            }
        };
        out = out.replace(&format!("{{{k}}}"), &v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_for_json_and_urls() {
        let values = BTreeMap::from([("what".to_owned(), "烟感 \"A3\"\n".to_owned())]);
        assert_eq!(
            fill("{\"t\":\"{what}\"}", &values, Escape::Json),
            "{\"t\":\"烟感 \\\"A3\\\"\\n\"}"
        );
        assert_eq!(
            fill("https://x/?m={what}", &values, Escape::Url),
            "https://x/?m=%E7%83%9F%E6%84%9F+%22A3%22%0A"
        );
    }

    #[test]
    fn robots_answering_200_with_an_error_code_are_not_delivered() {
        let ch = |kind| Channel {
            id: "c".into(),
            kind,
            timeout: Duration::from_secs(1),
        };
        let ok = reqwest::StatusCode::OK;
        let ding = ch(Kind::Dingtalk {
            url: "http://x/".into(),
            secret: "s".into(),
        });
        assert!(matches!(
            ding.judge(ok, r#"{"errcode":0,"errmsg":"ok"}"#),
            Outcome::Delivered(_)
        ));
        assert!(matches!(
            ding.judge(ok, r#"{"errcode":310000,"errmsg":"sign not match"}"#),
            Outcome::Permanent(_)
        ));
        assert!(matches!(
            ding.judge(ok, r#"{"errcode":130101,"errmsg":"send too fast"}"#),
            Outcome::Retry(_)
        ));
        let wecom = ch(Kind::Wecom {
            url: "http://x/".into(),
        });
        assert!(matches!(
            wecom.judge(ok, r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#),
            Outcome::Permanent(_)
        ));
        let feishu = ch(Kind::Feishu {
            url: "http://x/".into(),
            secret: "s".into(),
        });
        assert!(matches!(
            feishu.judge(ok, r#"{"code":19021,"msg":"sign match fail"}"#),
            Outcome::Permanent(_)
        ));
        assert!(matches!(
            feishu.judge(reqwest::StatusCode::BAD_GATEWAY, ""),
            Outcome::Retry(_)
        ));
    }
}
