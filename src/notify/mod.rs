//! Duty alerts (值班通知): who is told of an alarm and how. The `roster`
//! (who is on duty when, pure), the `channel`s (webhook, WeCom, DingTalk,
//! Feishu, SMS: a signed request per message; email over SMTP; the peer's
//! answer read into delivered / retry / permanent), routing and escalation
//! (`policy`, pure), the durable `outbox`, and the notifier `task`.

pub mod ack;
pub mod channel;
pub mod outbox;
pub mod policy;
pub mod roster;
pub mod task;

use crate::config::Config;
use channel::{Channel, Message, Outcome};

/// `campusgw notify test`: one test message through a channel, to the person
/// given (their phone for SMS, an @-mention on the robots), with the answer.
pub async fn send_test(
    cfg: &Config,
    channel: &str,
    person: Option<&str>,
    now_ms: i64,
) -> Result<Outcome, String> {
    let c = cfg
        .notify
        .channels
        .get(channel)
        .ok_or_else(|| format!("no channel `{channel}` in [notify.channels]"))?;
    let ch = Channel::new(channel, c)?;
    let p = match person {
        Some(id) => Some(
            cfg.notify
                .people
                .iter()
                .find(|p| p.id == id)
                .ok_or_else(|| format!("no person `{id}` in [[notify.people]]"))?,
        ),
        None => None,
    };
    let offset = crate::rules::calendar::parse_offset(&cfg.alarms.utc_offset)?;
    let time = chrono::DateTime::from_timestamp_millis(now_ms)
        .map(|t| {
            t.with_timezone(&offset)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    let english = p.is_some_and(|p| p.lang == crate::alarms::Lang::En);
    let (title, text) = if english {
        (
            "[Test] Campus Gateway".to_owned(),
            format!("A test message from the gateway at {time}: this channel works."),
        )
    } else {
        (
            "【测试】校园安全网关".to_owned(),
            format!("网关测试消息，发送时间 {time}：此通道可用。"),
        )
    };
    let mut fields = std::collections::BTreeMap::new();
    for (k, v) in [
        ("severity", "test"),
        ("what", title.as_str()),
        ("where", "-"),
        ("value", "-"),
        ("time", time.as_str()),
        ("link", ""),
    ] {
        fields.insert(k.to_owned(), v.to_owned());
    }
    let msg = Message {
        title,
        text,
        mobiles: p
            .and_then(|p| p.dingtalk_mobile.clone().or_else(|| p.phone.clone()))
            .into_iter()
            .collect(),
        phone: p.and_then(|p| p.phone.clone()),
        email: p.and_then(|p| p.email.clone()),
        idempotency_key: format!("test-{channel}-{now_ms}"),
        fields,
    };
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(ch.send(&client, &msg, now_ms).await)
}
