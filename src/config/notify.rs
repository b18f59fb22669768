//! `[notify]`: the people who are told of alarms, their teams and the duty
//! roster (值班表). Who is on duty is worked out by `notify::roster`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;
use crate::alarms::Lang;

/// `[notify]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Everyone who may be told of an alarm.
    #[serde(default)]
    pub people: Vec<PersonConfig>,
    /// Teams by id (`security`, `canteen`, `labs`, `transport`, `leadership`).
    #[serde(default)]
    pub teams: BTreeMap<String, TeamConfig>,
    /// The weekly duty pattern.
    #[serde(default)]
    pub shifts: Vec<ShiftConfig>,
    /// A CSV duty roster (`date,start,end,team,person`) that replaces the
    /// weekly pattern of a team on the dates it lists; relative to the
    /// configuration file.
    pub roster_file: Option<PathBuf>,
    /// Where messages go, by id.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Escalation policies by id.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Which alarms go to which policy; the first that matches wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The older place of `[web] public_url` (still read when that is unset).
    pub public_url: Option<String>,
    /// How long a new alarm waits before its first message, so that a flood
    /// folded into one group is one message (Alertmanager's `group_wait`).
    #[serde(default = "default_group_wait", with = "humantime_serde")]
    pub group_wait: Duration,
}

fn default_group_wait() -> Duration {
    Duration::from_secs(3)
}

/// `[notify.policies.<id>]`: whom to tell, when, through what, until someone
/// acknowledges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// In order of `after`.
    pub steps: Vec<StepConfig>,
    /// After the last step, tell its people again this often while the alarm
    /// is unacknowledged.
    #[serde(default, with = "humantime_serde::option")]
    pub repeat: Option<Duration>,
    /// Tell everyone who was told that the alarm is over.
    #[serde(default)]
    pub notify_on_clear: bool,
    /// Each message's link acknowledges from the phone: `/ack/{token}`, a
    /// one-time token bound to the alarm and the person (needs
    /// `[web] public_url`).
    #[serde(default)]
    pub ack_links: bool,
    /// How long an ack link stays valid.
    #[serde(default = "default_ack_expiry", with = "humantime_serde")]
    pub ack_expiry: Duration,
    /// Local times (`"08:00"`) at which the policy's `low` alarms are sent
    /// as one digest, through its first step, instead of one message each.
    #[serde(default)]
    pub digest_at: Vec<String>,
}

fn default_ack_expiry() -> Duration {
    Duration::from_secs(2 * 3600)
}

impl NotifyConfig {
    /// Where messages link to: `[web] public_url`, else the older
    /// `notify.public_url`.
    pub fn public_url<'a>(&'a self, web: &'a super::WebConfig) -> Option<&'a str> {
        web.public_url
            .as_deref()
            .or(self.public_url.as_deref())
            .map(|u| u.trim_end_matches('/'))
    }
}

/// One step of a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// How long after the alarm was raised (unacknowledged).
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// `on_duty:<team>`, `lead:<team>`, `team:<team>`, `person:<id>`.
    pub notify: Vec<String>,
    /// Channel ids.
    pub channels: Vec<String>,
}

/// `[[notify.routes]]`: empty lists match everything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Severities.
    #[serde(default)]
    pub severities: Vec<crate::alarms::Severity>,
    /// Device kinds (`gateway` for the gateway's own alarms).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Rule ids.
    #[serde(default)]
    pub rules: Vec<String>,
    /// A building.
    pub building: Option<String>,
    /// The policy.
    pub policy: String,
}

/// `[notify.channels.<id>]`: one way of telling people. Every address is
/// configurable (an intranet relay, a test receiver); keys and secrets come
/// from `{ env = … }` or `{ file = … }`.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// What it is, with its own settings.
    pub kind: ChannelKind,
    /// At most this many messages a minute (the robots' own limits by default:
    /// WeCom and DingTalk 20, Feishu 100); what waits is merged, not dropped.
    pub rate_per_minute: Option<u32>,
    /// A message not delivered within this time is given up, counted and
    /// raised as the gateway's own alarm.
    pub max_age: Duration,
    /// Per request.
    pub timeout: Duration,
}

/// The settings every channel has.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    rate_per_minute: Option<u32>,
    #[serde(default = "default_max_age", with = "humantime_serde")]
    max_age: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
}

impl<'de> Deserialize<'de> for ChannelConfig {
    // serde's `flatten` cannot be combined with `deny_unknown_fields`: the
    // table is split by hand, so a misspelt key is still an error.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut own = toml::Table::deserialize(d)?;
        let mut common = toml::Table::new();
        for key in ["rate_per_minute", "max_age", "timeout"] {
            if let Some(v) = own.remove(key) {
                common.insert(key.to_owned(), v);
            }
        }
        let c = Common::deserialize(toml::Value::Table(common)).map_err(D::Error::custom)?;
        let kind = ChannelKind::deserialize(toml::Value::Table(own)).map_err(D::Error::custom)?;
        Ok(Self {
            kind,
            rate_per_minute: c.rate_per_minute,
            max_age: c.max_age,
            timeout: c.timeout,
        })
    }
}

fn default_max_age() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The kinds of channel (`type = …`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ChannelKind {
    /// A JSON POST to any URL, signed with `X-Campusgw-Signature` when a secret is set.
    Webhook {
        /// Where.
        url: String,
        /// HMAC-SHA256 key of the signature.
        secret: Option<Secret>,
    },
    /// A WeCom (企业微信) group robot.
    Wecom {
        /// The robot's address without its key.
        #[serde(default = "default_wecom_url")]
        url: String,
        /// The robot's key (`?key=`).
        key: Secret,
    },
    /// A DingTalk (钉钉) custom robot, signed.
    Dingtalk {
        /// The robot's address without its token.
        #[serde(default = "default_dingtalk_url")]
        url: String,
        /// The robot's `access_token`.
        access_token: Secret,
        /// The robot's signing secret (`SEC…`).
        secret: Secret,
    },
    /// A Feishu/Lark (飞书) custom robot, signed.
    Feishu {
        /// The robot's address without its hook id.
        #[serde(default = "default_feishu_url")]
        url: String,
        /// The hook id (the last part of the robot's address).
        hook: Secret,
        /// The robot's signing secret.
        secret: Secret,
    },
    /// Email over SMTP, one plain-text UTF-8 message per person (to their
    /// `email`): a campus relay keeps working with the internet line down.
    Email {
        /// The SMTP server's host name (checked against its certificate).
        host: String,
        /// Default: 587 for `starttls`, 465 for `tls`, 25 for `plain`.
        port: Option<u16>,
        /// `starttls` (default), `tls` (implicit, SMTPS) or `plain` — plain
        /// only to a relay on this machine (`127.0.0.1`, `::1`, `localhost`).
        #[serde(default)]
        security: SmtpSecurity,
        /// The sender (`校园安全网关 <gateway@school.example>`).
        from: String,
        /// SMTP user name, with `password`.
        user: Option<Secret>,
        /// SMTP password.
        password: Option<Secret>,
        /// A PEM file with the CA of a campus relay's certificate, trusted
        /// besides the system's roots.
        ca_file: Option<PathBuf>,
    },
    /// SMS through the provider's HTTP API: one templated request per person.
    Sms {
        /// `POST` (default) or `GET`.
        #[serde(default = "default_method")]
        method: String,
        /// The address; placeholders are filled in (URL-encoded).
        url: String,
        /// Headers; a value may hold `{secret}`.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// The body with placeholders: `{phone}`, `{severity}`, `{what}`,
        /// `{where}`, `{value}`, `{time}`, `{link}`, `{text}`, `{secret}`
        /// (filled in JSON-escaped when the body is JSON).
        #[serde(default)]
        body: String,
        /// What `{secret}` stands for.
        secret: Option<Secret>,
    },
}

/// How an email channel protects its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connect, then STARTTLS (required: never falls back to plain).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only to a relay on loopback.
    Plain,
}

fn default_wecom_url() -> String {
    "https://qyapi.weixin.qq.com/cgi-bin/webhook/send".into()
}
fn default_dingtalk_url() -> String {
    "https://oapi.dingtalk.com/robot/send".into()
}
fn default_feishu_url() -> String {
    "https://open.feishu.cn/open-apis/bot/v2/hook".into()
}
fn default_method() -> String {
    "POST".into()
}

/// `[[notify.people]]`: one person.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    /// Stable id, referred to by teams, shifts and the roster file.
    pub id: String,
    /// Name as shown in messages and the ledger (`张伟`).
    pub name: String,
    /// Mobile number for SMS.
    pub phone: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// WeCom (企业微信) user id, to @-mention in a group robot's message.
    pub wecom_user: Option<String>,
    /// Mobile number registered with DingTalk, to @-mention.
    pub dingtalk_mobile: Option<String>,
    /// Language of their messages.
    #[serde(default)]
    pub lang: Lang,
    /// The status page's user they sign in as (acknowledging from a message).
    pub user: Option<String>,
}

/// `[notify.teams.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    /// A human name (`保卫处`).
    pub name: Option<String>,
    /// People ids.
    #[serde(default)]
    pub members: Vec<String>,
    /// The person the chain escalates to (a people id).
    pub lead: Option<String>,
}

/// `[[notify.shifts]]`: who of a team is on duty when, every week.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    /// The team.
    pub team: String,
    /// People ids on this shift.
    pub people: Vec<String>,
    /// `mon` … `sun`; empty: every day.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// `08:00-20:00`; a range may pass midnight (`20:00-08:00` belongs to the
    /// day it starts). Empty: all day.
    #[serde(default)]
    pub times: Vec<String>,
    /// Whether the shift also holds on `[alarms].holidays`.
    #[serde(default)]
    pub on_holidays: bool,
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_misspelt_channel_key_is_an_error() {
        let text = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[notify.channels.robot]\ntype = \"wecom\"\nkey = { env = \"K\" }\nrate_per_minut = 10\n";
        let err = Config::from_toml(text, Vec::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("rate_per_minut"), "{err}");
        let ok = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[notify.channels.robot]\ntype = \"wecom\"\nkey = { env = \"K\" }\nrate_per_minute = 10\ntimeout = \"5s\"\n";
        let cfg = Config::from_toml(ok, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let robot = &cfg.notify.channels["robot"];
        assert_eq!(
            (robot.rate_per_minute, robot.timeout.as_secs()),
            (Some(10), 5)
        );
    }
}
