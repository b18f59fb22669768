//! The demo's duty alerts: a fictitious roster covering the whole week
//! (security, canteen, labs, transport, leadership), an escalation with ack
//! links, and a receiver inside the demo process standing in for the SMS
//! provider — it logs each message it would have sent (one line each) and
//! keeps the last [`KEEP`] for `GET /messages` on its own loopback port.
//! So a newcomer sees raised → sent to the duty guard → escalated to the
//! head of security → acknowledged from the link.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, NotifyConfig};

/// Messages the receiver keeps.
pub const KEEP: usize = 50;

/// The demo's `[notify]`; `{receiver}` is the receiver's address. The
/// people are fictitious.
const NOTIFY: &str = r#"
group_wait = "3s"

[[people]]
id = "zhang-wei"
name = "张伟"
phone = "13800000001"
[[people]]
id = "li-na"
name = "李娜"
phone = "13800000002"
[[people]]
id = "wang-qiang"
name = "王强"
phone = "13800000003"
[[people]]
id = "chen-jing"
name = "陈静"
phone = "13800000004"
[[people]]
id = "liu-yang"
name = "刘洋"
phone = "13800000005"
[[people]]
id = "sun-li"
name = "孙丽"
phone = "13800000006"
[[people]]
id = "zhao-min"
name = "赵敏"
phone = "13800000007"

[teams.security]
name = "保卫处"
members = ["zhang-wei", "li-na", "wang-qiang"]
lead = "wang-qiang"
[teams.canteen]
name = "食堂"
members = ["chen-jing"]
lead = "chen-jing"
[teams.labs]
name = "实验室"
members = ["liu-yang"]
lead = "liu-yang"
[teams.transport]
name = "校车"
members = ["sun-li"]
lead = "sun-li"
[teams.leadership]
name = "校领导"
members = ["zhao-min"]
lead = "zhao-min"

# Day and night guards, every day of the week, holidays too.
[[shifts]]
team = "security"
people = ["zhang-wei"]
times = ["07:00-19:00"]
on_holidays = true
[[shifts]]
team = "security"
people = ["li-na"]
times = ["19:00-07:00"]
on_holidays = true
[[shifts]]
team = "canteen"
people = ["chen-jing"]
on_holidays = true
[[shifts]]
team = "labs"
people = ["liu-yang"]
on_holidays = true
[[shifts]]
team = "transport"
people = ["sun-li"]
on_holidays = true
[[shifts]]
team = "leadership"
people = ["zhao-min"]
on_holidays = true

[channels.demo-sms]
type = "sms"
url = "http://{receiver}/sms"
body = '{"phone":"{phone}","title":"{what}","text":"{text}","link":"{link}"}'

[policies.fire]
steps = [
  { after = "0s", notify = ["on_duty:security"], channels = ["demo-sms"] },
  { after = "2m", notify = ["lead:security"], channels = ["demo-sms"] },
  { after = "5m", notify = ["lead:leadership"], channels = ["demo-sms"] },
]
notify_on_clear = true
ack_links = true

[policies.duty]
steps = [{ after = "0s", notify = ["on_duty:security"], channels = ["demo-sms"] }]
ack_links = true

[[routes]]
severities = ["critical"]
policy = "fire"
[[routes]]
severities = ["high"]
policy = "duty"
"#;

/// One message the demo would have sent.
#[derive(Debug, Clone, Serialize)]
pub struct DemoMessage {
    /// Received, epoch ms.
    pub at: i64,
    /// The person's name (from the phone number).
    pub to: String,
    /// The phone number.
    pub phone: String,
    /// Severity and what.
    pub title: String,
    /// The whole text.
    pub text: String,
    /// The link (an ack link with `ack_links`).
    pub link: String,
}

#[derive(Deserialize)]
struct Sms {
    phone: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    link: String,
}

#[derive(Clone)]
struct Inbox {
    names: Arc<BTreeMap<String, String>>,
    kept: Arc<Mutex<VecDeque<DemoMessage>>>,
}

#[derive(Serialize)]
struct Messages {
    messages: Vec<DemoMessage>,
}

#[derive(Serialize)]
struct Answer {
    #[serde(rename = "Code")]
    code: &'static str,
}

async fn take(State(inbox): State<Inbox>, Json(sms): Json<Sms>) -> Json<Answer> {
    let to = inbox
        .names
        .get(&sms.phone)
        .cloned()
        .unwrap_or_else(|| sms.phone.clone());
    info!(to = %to, title = %sms.title, link = %sms.link, "Demo: this message would have been sent.");
    let mut kept = inbox.kept.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() == KEEP {
        kept.pop_front();
    }
    kept.push_back(DemoMessage {
        at: crate::reading::now_ms(),
        to,
        phone: sms.phone,
        title: sms.title,
        text: sms.text,
        link: sms.link,
    });
    Json(Answer { code: "OK" })
}

async fn list(State(inbox): State<Inbox>) -> Json<Messages> {
    let kept = inbox.kept.lock().unwrap_or_else(|e| e.into_inner());
    Json(Messages {
        messages: kept.iter().rev().cloned().collect(),
    })
}

/// The demo's `[notify]` with its channel at `receiver`.
pub fn notify_config(receiver: SocketAddr) -> anyhow::Result<NotifyConfig> {
    toml::from_str(&NOTIFY.replace("{receiver}", &receiver.to_string()))
        .context("the demo's duty roster")
}

/// Starts the receiver on a free loopback port until `stop`, and points
/// `cfg`'s duty alerts at it; the page's address for links is `public_url`.
pub async fn start(
    cfg: &mut Config,
    public_url: String,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot start the demo's message receiver")?;
    let addr = listener.local_addr()?;
    cfg.notify = notify_config(addr)?;
    cfg.web.public_url = Some(public_url);
    let names = cfg
        .notify
        .people
        .iter()
        .filter_map(|p| p.phone.clone().map(|ph| (ph, p.name.clone())))
        .collect();
    let inbox = Inbox {
        names: Arc::new(names),
        kept: Arc::new(Mutex::new(VecDeque::with_capacity(KEEP))),
    };
    let app = Router::new()
        .route("/sms", post(take))
        .route("/messages", get(list))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(inbox);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "The demo's message receiver stopped.");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_team_has_someone_on_duty_all_week_and_on_holidays() {
        let mut cfg = Config::from_toml(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[web]\npublic_url = \"http://127.0.0.1:8080\"\n[alarms]\nholidays = [\"2026-12-05\"]\n",
            Vec::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
        cfg.notify = notify_config("127.0.0.1:9".parse().expect("addr")).expect("demo notify");
        let roster = crate::notify::roster::Roster::new(&cfg).unwrap_or_else(|p| panic!("{p:?}"));
        crate::notify::policy::Plan::new(&cfg).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(roster.teams().count(), 5);
        // 2026-11-30 (a Monday) 00:00 in Beijing, every 30 minutes for a week.
        let start = 1_795_968_000_000;
        for i in 0..(7 * 48) {
            let at = start + i * 1_800_000;
            for d in roster.duty(at) {
                assert!(!d.people.is_empty(), "{} has nobody at {at}", d.team);
            }
        }
    }
}
