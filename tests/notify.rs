//! Duty alerts' channels against peers that check them as the real ones do
//! (`tests/common/robot_receiver.py`: Python's own hmac verifies every
//! signature): `campusgw notify test` through a webhook, the WeCom, DingTalk
//! and Feishu robots and an SMS provider; a wrong secret is refused and said so.

mod common;

use std::process::Command;

use common::robots::{self, Robots};

const BIN: &str = env!("CARGO_BIN_EXE_campusgw");

fn config(robots: &Robots) -> String {
    let base = robots.url();
    format!(
        r#"[mqtt]
url = "mqtt://127.0.0.1:1"

[[notify.people]]
id = "zhang"
name = "张伟"
phone = "13800000001"
dingtalk_mobile = "13800000001"

[notify.channels.hook]
type = "webhook"
url = "{base}/webhook"
secret = {{ env = "T_WEBHOOK" }}

[notify.channels.wecom]
type = "wecom"
url = "{base}/wecom/send"
key = {{ env = "T_WECOM" }}

[notify.channels.ding]
type = "dingtalk"
url = "{base}/dingtalk/robot/send"
access_token = {{ env = "T_TOKEN" }}
secret = {{ env = "T_DING" }}

[notify.channels.ding-wrong]
type = "dingtalk"
url = "{base}/dingtalk/robot/send"
access_token = {{ env = "T_TOKEN" }}
secret = {{ env = "T_WRONG" }}

[notify.channels.feishu]
type = "feishu"
url = "{base}/feishu/hook"
hook = {{ env = "T_TOKEN" }}
secret = {{ env = "T_FEISHU" }}

[notify.channels.sms]
type = "sms"
url = "{base}/sms/send"
headers = {{ Authorization = "Bearer {{secret}}" }}
body = '{{"phone":"{{phone}}","template":"SMS_123","params":{{"what":"{{what}}","time":"{{time}}"}}}}'
secret = {{ env = "T_TOKEN" }}
"#
    )
}

fn notify_test(dir: &std::path::Path, channel: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["notify", "test", "--config"])
        .arg(dir.join("campus.toml"))
        .args(["--channel", channel, "--person", "zhang"])
        .env("T_WEBHOOK", robots::WEBHOOK_SECRET)
        .env("T_WECOM", robots::WECOM_KEY)
        .env("T_DING", robots::DINGTALK_SECRET)
        .env("T_FEISHU", robots::FEISHU_SECRET)
        .env("T_WRONG", "SECnot-the-secret")
        .env("T_TOKEN", "token-123")
        .output()
        .expect("run campusgw notify test");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_channel_delivers_a_signed_test_message() {
    let robots = Robots::start();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("campus.toml"), config(&robots)).expect("write config");
    for channel in ["hook", "wecom", "ding", "feishu", "sms"] {
        let (code, stdout, stderr) = notify_test(dir.path(), channel);
        assert_eq!(code, 0, "{channel}: {stdout}{stderr}\n{}", robots.log());
        assert!(stdout.contains("delivered"), "{channel}: {stdout}");
    }
    let requests = robots.requests();
    assert_eq!(requests.len(), 5, "{requests:#?}");
    assert!(
        requests.iter().all(|r| r["verified"] == true),
        "every signature checks out: {requests:#?}"
    );
    let by_path = |p: &str| {
        requests
            .iter()
            .find(|r| r["path"].as_str().is_some_and(|x| x.starts_with(p)))
            .unwrap_or_else(|| panic!("no request to {p}"))
    };
    let ding = by_path("/dingtalk/");
    assert_eq!(ding["json"]["at"]["atMobiles"][0], "13800000001");
    assert!(ding["json"]["markdown"]["text"]
        .as_str()
        .is_some_and(|t| t.contains("测试")));
    assert_eq!(
        by_path("/feishu/hook/token-123")["json"]["msg_type"],
        "text"
    );
    let sms = by_path("/sms/");
    assert_eq!(sms["headers"]["authorization"], "Bearer token-123");
    assert_eq!(sms["json"]["phone"], "13800000001");
    assert_eq!(sms["json"]["template"], "SMS_123");
    assert!(by_path("/webhook")["headers"]["idempotency-key"].is_string());
}

#[test]
fn a_wrong_secret_is_refused_and_said_so() {
    let robots = Robots::start();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("campus.toml"), config(&robots)).expect("write config");
    let (code, _, stderr) = notify_test(dir.path(), "ding-wrong");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("310000"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("token-123"),
        "no token in the message: {stderr}"
    );
    let (code, _, stderr) = notify_test(dir.path(), "nope");
    assert_eq!(code, 2);
    assert!(stderr.contains("no channel `nope`"), "{stderr}");
}

/// `campusgw notify test` through a real SMTP server (aiosmtpd) that
/// requires a login: the message read back has the person as recipient, a
/// UTF-8 subject encoded for mail (RFC 2047) and decoded back to Chinese, a
/// plain-text UTF-8 body; a wrong password is a permanent refusal that names
/// the key to fix.
#[test]
fn email_reaches_the_person_through_a_real_smtp_server() {
    use common::smtp::Smtp;
    let smtp = Smtp::start_with(Some(("gw", "mail-pass")));
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        r#"[mqtt]
url = "mqtt://127.0.0.1:1"

[[notify.people]]
id = "zhang"
name = "张伟"
email = "zhang.wei@school.example"

[notify.channels.mail]
type = "email"
host = "127.0.0.1"
port = {port}
security = "plain"
from = "校园安全网关 <gateway@school.example>"
user = {{ env = "T_MAIL_USER" }}
password = {{ env = "T_MAIL_PASS" }}
"#,
        port = smtp.port
    );
    std::fs::write(dir.path().join("campus.toml"), text).expect("write config");
    let run = |password: &str| {
        let out = Command::new(BIN)
            .args(["notify", "test", "--config"])
            .arg(dir.path().join("campus.toml"))
            .args(["--channel", "mail", "--person", "zhang"])
            .env("T_MAIL_USER", "gw")
            .env("T_MAIL_PASS", password)
            .output()
            .expect("run campusgw notify test");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run("mail-pass");
    assert_eq!(code, 0, "{out}\n{}", smtp.log());
    assert!(out.contains("delivered"), "{out}");
    let got = smtp.accepted();
    assert_eq!(got.len(), 1, "{got:#?}");
    let m = &got[0];
    assert_eq!(m["auth"], true, "{m:#}");
    assert_eq!(m["rcpt_tos"][0], "zhang.wei@school.example");
    assert_eq!(m["mail_from"], "gateway@school.example");
    assert_eq!(m["subject"], "【测试】校园安全网关", "{m:#}");
    let raw = m["headers"]["subject"].as_str().unwrap_or_default();
    assert!(
        raw.is_ascii() && raw.to_ascii_lowercase().contains("=?utf-8?"),
        "the subject is encoded for mail: {raw}"
    );
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["charset"], "utf-8");
    assert!(
        m["headers"]["message-id"]
            .as_str()
            .is_some_and(|id| id.ends_with("@campusgw>")),
        "{m:#}"
    );
    let body = m["body"].as_str().unwrap_or_default();
    assert!(
        body.contains("网关测试消息") && body.contains("此通道可用"),
        "{body}"
    );

    let (code, out) = run("not-the-password");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused") && out.contains("535") && out.contains("notify.channels.mail"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-password"),
        "no password shown: {out}"
    );
}

// ---------------------------------------------------------------------------
// The notifier on a controllable clock: alarms written to a real alarm store,
// messages checked at the receiver.

mod escalation {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use campus_gateway::alarms::store::AlarmStore;
    use campus_gateway::alarms::{Action, Alarm, Change, Command, Event, Severity, Text};
    use campus_gateway::config::Config;
    use campus_gateway::notify::task::Notifier;
    use campus_gateway::rules::task::CommandRequest;
    use campus_gateway::telemetry::{Health, Metrics, Status};
    use tokio::sync::mpsc;

    use super::common::robots::{self, Robots};

    /// 2026-12-02 10:00 in Beijing.
    const T0: i64 = 1_796_176_800_000;
    const MINUTE: i64 = 60_000;

    struct Setup {
        dir: tempfile::TempDir,
        store: AlarmStore,
        clock: Arc<AtomicI64>,
        robots: Robots,
        cfg: Config,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        commands: mpsc::Receiver<CommandRequest>,
        commands_tx: mpsc::Sender<CommandRequest>,
    }

    fn setup(extra: &str) -> Setup {
        let robots = Robots::start();
        let base = robots.url();
        let text = format!(
            r#"[mqtt]
url = "mqtt://127.0.0.1:1"
[notify]
group_wait = "3s"
[[notify.people]]
id = "zhang"
name = "张伟"
phone = "13800000001"
[[notify.people]]
id = "wang"
name = "王处长"
phone = "13800000003"
[notify.teams.security]
members = ["zhang"]
lead = "wang"
[[notify.shifts]]
team = "security"
people = ["zhang"]
[notify.channels.hook]
type = "webhook"
url = "{base}/webhook"
secret = "{secret}"
[notify.channels.ding]
type = "dingtalk"
url = "{base}/dingtalk/robot/send"
access_token = "t"
secret = "SECwrong"
[notify.policies.fire]
steps = [
  {{ after = "0s", notify = ["on_duty:security"], channels = ["hook"] }},
  {{ after = "5m", notify = ["lead:security"], channels = ["hook"] }},
]
notify_on_clear = true
[[notify.routes]]
severities = ["critical"]
policy = "fire"
{extra}"#,
            secret = robots::WEBHOOK_SECRET,
        );
        let cfg = Config::from_toml(&text, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = AlarmStore::open(&dir.path().join("alarms.db")).expect("store");
        let (commands_tx, commands) = mpsc::channel(16);
        Setup {
            dir,
            store,
            clock: Arc::new(AtomicI64::new(T0)),
            robots,
            cfg,
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::default()),
            commands,
            commands_tx,
        }
    }

    impl Setup {
        fn notifier(&self) -> Notifier {
            let clock = self.clock.clone();
            Notifier::new(
                &self.cfg,
                self.dir.path(),
                self.commands_tx.clone(),
                self.metrics.clone(),
                self.health.clone(),
                Arc::new(move || clock.load(Ordering::SeqCst)),
            )
            .expect("notifier")
            .expect("routes configured")
        }

        fn at(&self, t: i64) {
            self.clock.store(t, Ordering::SeqCst);
        }

        /// A raised alarm, written as the rules task writes it.
        fn raise(
            &mut self,
            id: i64,
            severity: Severity,
            at: i64,
            edit: impl FnOnce(&mut Alarm),
        ) -> Alarm {
            let mut a = Alarm::raised(
                id,
                "smoke-alarm",
                severity,
                Text::two("烟感报警：A3 / 3 / 301", "Smoke at A3"),
                Some(4.2),
                at,
            );
            a.name = Text::two("烟感报警", "Smoke detector alarm");
            a.device = format!("d{id}");
            a.kind = "smoke".into();
            a.site = "yazhong".into();
            edit(&mut a);
            self.write(&a, "raise", at);
            a
        }

        fn write(&mut self, a: &Alarm, action: &str, at: i64) {
            let change = Change {
                alarm: a.clone(),
                event: Event {
                    alarm_id: a.id,
                    at,
                    action: action.into(),
                    from: None,
                    to: a.state,
                    user: None,
                    comment: None,
                    value: a.value,
                    detail: Vec::new(),
                },
            };
            self.store.apply(&[change]).expect("apply");
        }

        fn act(&mut self, a: &mut Alarm, action: Action, name: &str, at: i64) {
            a.apply(&action, at).expect("allowed");
            self.write(a, name, at);
        }

        /// Requests that reached the webhook and were accepted.
        fn delivered(&self, path: &str) -> Vec<serde_json::Value> {
            self.robots
                .requests()
                .into_iter()
                .filter(|r| r["path"] == path && r["verified"] == true)
                .collect()
        }
    }

    async fn round(n: &mut Notifier) {
        n.round().await.expect("round");
    }

    #[tokio::test]
    async fn steps_fire_at_their_minute_and_an_ack_stops_the_chain() {
        let mut s = setup("");
        let mut n = s.notifier();
        let fire = s.raise(1, Severity::Critical, T0, |_| {});
        let mut other = s.raise(2, Severity::Critical, T0, |_| {});
        round(&mut n).await;
        assert!(
            s.delivered("/webhook").is_empty(),
            "the first waits group_wait"
        );
        s.at(T0 + 3_000);
        round(&mut n).await;
        let first = s.delivered("/webhook");
        assert_eq!(first.len(), 2, "{first:#?}");
        let text = first[0]["json"]["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("烟感报警")
                && text.contains("位置：")
                && text.contains("2026-12-02 10:00:00"),
            "{text}"
        );
        assert!(first[0]["json"]["title"]
            .as_str()
            .is_some_and(|t| t.contains("【紧急】")));

        // Alarm 2 is acknowledged a minute later: its chain stops.
        s.act(
            &mut other,
            Action::Ack {
                by: "op".into(),
                comment: None,
            },
            "ack",
            T0 + MINUTE,
        );
        s.at(T0 + 5 * MINUTE - 1);
        round(&mut n).await;
        assert_eq!(
            s.delivered("/webhook").len(),
            2,
            "not before the fifth minute"
        );
        s.at(T0 + 5 * MINUTE);
        round(&mut n).await;
        let all = s.delivered("/webhook");
        assert_eq!(
            all.len(),
            3,
            "the lead, for the unacknowledged alarm only: {all:#?}"
        );
        let keys: Vec<&str> = all
            .iter()
            .filter_map(|r| r["headers"]["idempotency-key"].as_str())
            .collect();
        assert!(
            keys[2].contains(&format!("alarm:{}:step:1", fire.id)),
            "{keys:?}"
        );
        s.at(T0 + 60 * MINUTE);
        round(&mut n).await;
        assert_eq!(
            s.delivered("/webhook").len(),
            3,
            "no repeat configured: the chain is over"
        );
    }

    #[tokio::test]
    async fn a_flood_is_one_message_a_drill_and_a_shelf_none_and_a_clear_is_resolved() {
        let mut s = setup("");
        let mut n = s.notifier();
        // Twelve detectors, folded into group 100 within the group wait.
        let mut members = Vec::new();
        for i in 1..=12 {
            members.push(s.raise(i, Severity::Critical, T0, |_| {}));
        }
        let mut group = s.raise(100, Severity::Critical, T0 + 500, |g| {
            g.is_group = true;
            g.device = "*".into();
            g.count = 12;
            g.message = Text::two("12 个烟感报警（12 个仍在报警）", "12 × Smoke (12 active)");
        });
        for m in &mut members {
            m.group = Some(100);
            s.write(m, "group", T0 + 500);
        }
        // In a drill, and shelved before its first message.
        s.raise(200, Severity::Critical, T0, |a| {
            a.suppressed = Some("fire drill".into())
        });
        let mut shelved = s.raise(201, Severity::Critical, T0, |_| {});
        s.act(
            &mut shelved,
            Action::Shelve {
                by: "op".into(),
                until: T0 + 60 * MINUTE,
                reason: "detector cleaning".into(),
            },
            "shelve",
            T0 + 1_000,
        );
        s.at(T0 + 4_000);
        round(&mut n).await;
        let got = s.delivered("/webhook");
        assert_eq!(
            got.len(),
            1,
            "one message for the flood, none for the drill or the shelf: {got:#?}"
        );
        assert!(
            got[0]["json"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("12 个烟感报警")),
            "{got:#?}"
        );

        // The group clears: a resolved message to whoever was told.
        s.act(&mut group, Action::Clear, "clear", T0 + 2 * MINUTE);
        s.at(T0 + 2 * MINUTE);
        round(&mut n).await;
        let got = s.delivered("/webhook");
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[1]["json"]["title"]
                .as_str()
                .is_some_and(|t| t.contains("已恢复")),
            "{got:#?}"
        );
    }

    #[tokio::test]
    async fn a_receiver_down_gets_each_message_once_when_it_returns() {
        let mut s = setup("");
        let mut n = s.notifier();
        s.robots.answer_with(Some(503));
        s.raise(1, Severity::Critical, T0, |_| {});
        let mut t = T0 + 3_000;
        // Two minutes down, tried again and again.
        while t < T0 + 2 * MINUTE {
            s.at(t);
            round(&mut n).await;
            t += 5_000;
        }
        assert!(s.robots.requests().len() >= 2, "it was retried");
        assert!(s.delivered("/webhook").is_empty());
        s.robots.answer_with(None);
        while t < T0 + 10 * MINUTE {
            s.at(t);
            round(&mut n).await;
            t += 5_000;
        }
        let got = s.delivered("/webhook");
        // The first step once; the lead's step (at 5 min) once.
        assert_eq!(got.len(), 2, "{got:#?}");
        // Every attempt of a message carried the same key: a receiver can
        // tell a retry from a new message.
        let requests = s.robots.requests();
        let keys: std::collections::BTreeSet<String> = requests
            .iter()
            .filter_map(|r| r["headers"]["idempotency-key"].as_str().map(str::to_owned))
            .collect();
        assert!(requests.len() > 2, "{requests:#?}");
        assert_eq!(keys.len(), 2, "one key per message: {keys:?}");
        assert!(s.metrics.notifications("hook", "retried") >= 2);
    }

    #[tokio::test]
    async fn a_permanent_refusal_is_shown_and_not_retried() {
        let mut s = setup(
            "[notify.policies.ding]\nsteps = [{ after = \"0s\", notify = [\"person:zhang\"], channels = [\"ding\"] }]\n[[notify.routes]]\nseverities = [\"high\"]\npolicy = \"ding\"\n",
        );
        let mut n = s.notifier();
        s.raise(1, Severity::High, T0, |_| {});
        for i in 0..20 {
            s.at(T0 + 3_000 + i * 30_000);
            round(&mut n).await;
        }
        let tries = s.robots.requests();
        assert_eq!(
            tries.len(),
            1,
            "a bad signature is not retried in a loop: {tries:#?}"
        );
        assert_eq!(s.health.status("notify/ding"), Some(Status::Down));
        assert_eq!(s.metrics.notifications("ding", "failed"), 1);
        let (cmd, _) = s.commands.try_recv().expect("the notify-failed alarm");
        assert!(
            matches!(cmd, Command::System { ref rule, active: true, .. } if rule == "notify-failed"),
            "{cmd:?}"
        );
    }

    #[tokio::test]
    async fn a_restart_neither_loses_nor_repeats_a_pending_step() {
        let mut s = setup("");
        {
            let mut n = s.notifier();
            s.raise(1, Severity::Critical, T0, |_| {});
            s.at(T0 + 3_000);
            round(&mut n).await;
        }
        assert_eq!(s.delivered("/webhook").len(), 1);
        // A new notifier on the same store (the gateway restarted).
        let mut n = s.notifier();
        s.at(T0 + 4_000);
        round(&mut n).await;
        assert_eq!(
            s.delivered("/webhook").len(),
            1,
            "the first step is not sent again"
        );
        s.at(T0 + 5 * MINUTE);
        round(&mut n).await;
        round(&mut n).await;
        assert_eq!(
            s.delivered("/webhook").len(),
            2,
            "the lead's step fires once, at its time"
        );
    }

    /// An alarm by email to the person on duty, through a real SMTP server:
    /// the body has severity, what, where in words, the value, the local
    /// time and the link; a 4xx is retried with the same Message-ID, a 5xx
    /// is given up at once and shown in /healthz.
    #[tokio::test]
    async fn an_alarm_by_email_and_the_smtp_answers_decide() {
        use super::common::smtp::Smtp;
        let smtp = Smtp::start();
        let mut s = setup(&format!(
            "[notify.channels.mail]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\nfrom = \"gw@school.example\"\n[notify.policies.mail]\nsteps = [{{ after = \"0s\", notify = [\"on_duty:security\"], channels = [\"mail\"] }}]\n[[notify.routes]]\nseverities = [\"high\"]\npolicy = \"mail\"\n",
            smtp.port
        ));
        s.cfg.notify.people[0].email = Some("zhang@school.example".into());
        s.cfg.notify.public_url = Some("https://safety.school.example".into());
        let mut n = s.notifier();
        s.raise(1, Severity::High, T0, |a| {
            a.location = Some(campus_gateway::reading::Location {
                building: Some("A3".into()),
                floor: Some("3".into()),
                room: Some("301".into()),
                name: None,
            });
        });
        s.at(T0 + 3_000);
        round(&mut n).await;
        let got = smtp.accepted();
        assert_eq!(got.len(), 1, "{got:#?}\n{}", smtp.log());
        assert_eq!(got[0]["subject"], "【重要】烟感报警");
        assert_eq!(got[0]["rcpt_tos"][0], "zhang@school.example");
        let body = got[0]["body"].as_str().unwrap_or_default();
        for part in [
            "【重要】",
            "烟感报警",
            "位置：A3 / 3 / 301",
            "数值：4.2",
            "时间：2026-12-02 10:00:00",
            "https://safety.school.example/#alarm-1",
        ] {
            assert!(body.contains(part), "{part} in {body}");
        }

        // Busy (4xx): retried later with the same Message-ID.
        smtp.reply_with(Some("451 4.3.0 mailbox busy, try later"));
        s.raise(2, Severity::High, T0 + MINUTE, |_| {});
        s.at(T0 + MINUTE + 3_000);
        round(&mut n).await;
        assert_eq!(s.metrics.notifications("mail", "retried"), 1);
        assert_eq!(s.health.status("notify/mail"), Some(Status::Degraded));
        smtp.reply_with(None);
        s.at(T0 + 2 * MINUTE);
        round(&mut n).await;
        let all = smtp.messages();
        assert_eq!(all.len(), 3, "{all:#?}");
        assert_eq!(
            all[1]["headers"]["message-id"],
            all[2]["headers"]["message-id"]
        );
        assert!(all[2]["refused"].is_null());
        assert_eq!(s.health.status("notify/mail"), Some(Status::Ok));

        // Refused for good (5xx): given up at once, shown, not retried.
        smtp.reply_with(Some("550 5.7.1 relaying denied"));
        s.raise(3, Severity::High, T0 + 3 * MINUTE, |_| {});
        for i in 0..10 {
            s.at(T0 + 3 * MINUTE + 3_000 + i * 30_000);
            round(&mut n).await;
        }
        assert_eq!(smtp.messages().len(), 4, "a 5xx is not retried");
        assert_eq!(s.metrics.notifications("mail", "failed"), 1);
        assert_eq!(s.health.status("notify/mail"), Some(Status::Down));
        let why = s
            .health
            .snapshot()
            .get("notify/mail")
            .and_then(|c| c.detail.clone())
            .unwrap_or_default();
        assert!(
            why.contains("550") && why.contains("notify.channels.mail"),
            "{why}"
        );
    }

    /// A team with nobody on duty is a warning in /healthz: the `roster`
    /// component degraded, naming the team and the time; ok again when a
    /// shift covers it.
    #[tokio::test]
    async fn a_shift_with_nobody_on_it_is_a_warning_in_healthz() {
        let s = setup(
            "[notify.teams.canteen]\nname = \"食堂\"\nmembers = [\"wang\"]\n[[notify.shifts]]\nteam = \"canteen\"\npeople = [\"wang\"]\ntimes = [\"08:00-09:00\"]\n",
        );
        s.at(T0 - 90 * MINUTE);
        let mut n = s.notifier();
        round(&mut n).await;
        assert_eq!(s.health.status("roster"), Some(Status::Ok));
        s.at(T0);
        round(&mut n).await;
        assert_eq!(s.health.status("roster"), Some(Status::Degraded));
        let detail = s
            .health
            .snapshot()
            .get("roster")
            .and_then(|c| c.detail.clone())
            .unwrap_or_default();
        assert!(
            detail.contains("canteen (食堂)")
                && detail.contains("2026-12-02 10:00")
                && !detail.contains("security"),
            "{detail}"
        );
        s.at(T0 + 22 * 60 * MINUTE);
        round(&mut n).await;
        assert_eq!(
            s.health.status("roster"),
            Some(Status::Ok),
            "08:00 the next day"
        );
    }

    /// `low` alarms of a policy with `digest_at` go out as one digest at
    /// those local times, not one each; the digest is in the outbox, so a
    /// restart neither loses nor repeats it; other severities are not held.
    #[tokio::test]
    async fn low_alarms_go_out_as_one_digest_at_its_time() {
        let mut s = setup(
            "[notify.policies.low]\nsteps = [{ after = \"0s\", notify = [\"on_duty:security\"], channels = [\"hook\"] }]\ndigest_at = [\"17:00\", \"08:00\"]\n[[notify.routes]]\nseverities = [\"low\", \"medium\"]\npolicy = \"low\"\n",
        );
        let digests = |s: &Setup| {
            s.delivered("/webhook")
                .into_iter()
                .filter(|r| {
                    r["headers"]["idempotency-key"]
                        .as_str()
                        .is_some_and(|k| k.contains("alarm:1:"))
                })
                .collect::<Vec<_>>()
        };
        {
            let mut n = s.notifier();
            for i in 1..=3 {
                s.raise(i, Severity::Low, T0 + i * MINUTE, |_| {});
            }
            // Not held: a medium alarm on the same policy.
            s.raise(9, Severity::Medium, T0, |_| {});
            s.at(T0 + 5 * MINUTE);
            round(&mut n).await;
            let now = s.delivered("/webhook");
            assert_eq!(now.len(), 1, "only the medium alarm at once: {now:#?}");
            s.at(T0 + 7 * 60 * MINUTE - 1_000);
            round(&mut n).await;
            assert!(digests(&s).is_empty(), "not before 17:00");
        }
        // The gateway restarts before the digest is due.
        let mut n = s.notifier();
        s.at(T0 + 7 * 60 * MINUTE);
        round(&mut n).await;
        let got = digests(&s);
        assert_eq!(got.len(), 1, "one digest at 17:00: {got:#?}");
        let title = got[0]["json"]["title"].as_str().unwrap_or_default();
        assert!(title.contains("提示汇总") && title.contains('3'), "{title}");
        let key = got[0]["headers"]["idempotency-key"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(key.matches("alarm:").count(), 3, "{key}");
        // Restarted again: not sent twice.
        let mut n = s.notifier();
        s.at(T0 + 7 * 60 * MINUTE + 1_000);
        round(&mut n).await;
        assert_eq!(digests(&s).len(), 1);
        // One raised after 17:00 waits for 08:00 the next morning.
        s.raise(4, Severity::Low, T0 + 8 * 60 * MINUTE, |_| {});
        s.at(T0 + 22 * 60 * MINUTE - 1_000);
        round(&mut n).await;
        assert_eq!(s.delivered("/webhook").len(), 2);
        s.at(T0 + 22 * 60 * MINUTE);
        round(&mut n).await;
        let all = s.delivered("/webhook");
        assert_eq!(all.len(), 3, "{all:#?}");
        assert!(all[2]["headers"]["idempotency-key"]
            .as_str()
            .is_some_and(|k| k.contains("alarm:4:")));
    }

    #[tokio::test]
    async fn a_rate_limited_robot_gets_one_merged_message() {
        let mut s = setup("");
        s.cfg
            .notify
            .channels
            .get_mut("hook")
            .expect("hook")
            .rate_per_minute = Some(1);
        let mut n = s.notifier();
        for i in 1..=5 {
            s.raise(i, Severity::Critical, T0, |_| {});
        }
        s.at(T0 + 3_000);
        round(&mut n).await;
        let got = s.delivered("/webhook");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0]["json"]["title"]
                .as_str()
                .is_some_and(|t| t.contains("5 条报警")),
            "{got:#?}"
        );
    }
}

/// The whole chain in a running gateway: a smoke alarm through a real
/// mosquitto reaches the person on duty through the webhook, the alarm's
/// detail lists the notification, and `/api/duty` says who is on duty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_alarm_reaches_the_person_on_duty() {
    use common::{eventually, feed, gateway, Mosquitto, Publisher, QoS};
    let robots = Robots::start();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        r#"[gateway]
data_dir = "{data}"
[mqtt]
url = "{mqtt}"
client_id = "gw-notify-{pid}"
[web]
listen = "127.0.0.1:0"
[[devices]]
id = "a3-301"
kind = "smoke"
site = "yazhong"
building = "A3"
floor = "3"
room = "301"
{rule}
[notify]
group_wait = "0s"
public_url = "https://safety.school.example"
[[notify.people]]
id = "zhang"
name = "张伟"
[notify.teams.security]
name = "保卫处"
members = ["zhang"]
[[notify.shifts]]
team = "security"
people = ["zhang"]
[notify.channels.hook]
type = "webhook"
url = "{base}/webhook"
secret = "{secret}"
[notify.policies.fire]
steps = [{{ after = "0s", notify = ["on_duty:security"], channels = ["hook"] }}]
[[notify.routes]]
policy = "fire"
"#,
        data = dir.path().display(),
        mqtt = broker.url(),
        pid = std::process::id(),
        rule = gateway::smoke_rule("Smoke at {location}"),
        base = robots.url(),
        secret = robots::WEBHOOK_SECRET,
    );
    let gw = gateway::start(gateway::config(&text)).await;
    gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&broker.url()).await;
    let mut p = feed::payload("smoke", common::now_ms(), 1);
    p["alarm"] = serde_json::json!(true);
    publisher
        .publish(
            "campus/yazhong/smoke/a3-301",
            p.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    publisher.flush().await;
    eventually("the message at the receiver", || async {
        robots.requests().iter().any(|r| r["verified"] == true)
    })
    .await;
    let msg = robots
        .requests()
        .into_iter()
        .find(|r| r["verified"] == true)
        .expect("message");
    let text = msg["json"]["text"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains("A3 / 3 / 301"), "{text}");
    assert!(
        text.contains("https://safety.school.example/#alarm-"),
        "{text}"
    );
    let id = gw.rules.open.read().expect("snapshot")[0].id;
    let detail = || async {
        let (_, body) = gateway::get(&gw, &format!("/api/alarms/{id}")).await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()
    };
    // Recorded as sent once the receiver's answer is back.
    eventually("the notification recorded as sent", || async {
        detail().await["notifications"][0]["state"] == "sent"
    })
    .await;
    let detail = detail().await;
    assert_eq!(detail["notifications"][0]["channel"], "hook", "{detail:#}");
    assert_eq!(detail["notifications"][0]["state"], "sent", "{detail:#}");
    assert_eq!(detail["notifications"][0]["people"][0], "zhang");
    let (status, body) = gateway::get(&gw, "/api/duty").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("张伟") && body.contains("保卫处"), "{body}");
    gw.stop().await;
}

/// The token of the first `/ack/` link in a message's text.
fn ack_token(text: &str) -> String {
    let at = text
        .find("/ack/")
        .unwrap_or_else(|| panic!("no ack link in {text}"));
    text[at + 5..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The confirm form's nonce in an ack page.
fn nonce_of(html: &str) -> String {
    let key = "name=\"nonce\" value=\"";
    let at = html
        .find(key)
        .unwrap_or_else(|| panic!("no nonce in {html}"));
    html[at + key.len()..]
        .chars()
        .take_while(|c| *c != '"')
        .collect()
}

/// Acknowledging from a message's link in a running gateway: the link the
/// robot got opens a page that changes nothing (twice, as a chat app's
/// preview would), a form without the page's nonce or from another site is
/// refused, the confirm acknowledges as the person's page user with the
/// audit entry, and a second use, an expired link, a garbage and a foreign
/// token each get a clear page, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_link_acknowledges_once_as_the_person() {
    use campus_gateway::alarms::State;
    use common::{eventually, feed, gateway, Mosquitto, Publisher, QoS};
    let robots = Robots::start();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        r#"[gateway]
data_dir = "{data}"
[mqtt]
url = "{mqtt}"
client_id = "gw-ack-{pid}"
[web]
listen = "127.0.0.1:0"
public_url = "https://safety.school.example"
[[devices]]
id = "a3-301"
kind = "smoke"
site = "yazhong"
building = "A3"
floor = "3"
room = "301"
[[devices]]
id = "b1-101"
kind = "smoke"
site = "yazhong"
building = "B1"
floor = "1"
room = "101"
{rule}
[notify]
group_wait = "0s"
[[notify.people]]
id = "zhang"
name = "张伟"
user = "zhangwei"
[notify.teams.security]
members = ["zhang"]
[[notify.shifts]]
team = "security"
people = ["zhang"]
[notify.channels.hook]
type = "webhook"
url = "{base}/webhook"
secret = "{secret}"
[notify.policies.fire]
steps = [{{ after = "0s", notify = ["on_duty:security"], channels = ["hook"] }}]
ack_links = true
[notify.policies.short]
steps = [{{ after = "0s", notify = ["on_duty:security"], channels = ["hook"] }}]
ack_links = true
ack_expiry = "1s"
[[notify.routes]]
building = "B1"
policy = "short"
[[notify.routes]]
policy = "fire"
"#,
        data = dir.path().display(),
        mqtt = broker.url(),
        pid = std::process::id(),
        rule = gateway::smoke_rule("Smoke at {location}"),
        base = robots.url(),
        secret = robots::WEBHOOK_SECRET,
    );
    let gw = gateway::start(gateway::config(&text)).await;
    gateway::wait_subscribed(&gw).await;
    let publisher = Publisher::connect(&broker.url()).await;
    let smoke = |device: &str| {
        let mut p = feed::payload("smoke", common::now_ms(), 1);
        p["alarm"] = serde_json::json!(true);
        (format!("campus/yazhong/smoke/{device}"), p.to_string())
    };
    let (topic, body) = smoke("a3-301");
    publisher.publish(&topic, body, QoS::AtLeastOnce).await;
    publisher.flush().await;
    let message = |place: &'static str| {
        let robots = &robots;
        async move {
            eventually("the message at the receiver", || async {
                robots.requests().iter().any(|r| {
                    r["json"]["text"]
                        .as_str()
                        .is_some_and(|t| t.contains(place))
                })
            })
            .await;
            robots
                .requests()
                .into_iter()
                .find_map(|r| {
                    r["json"]["text"]
                        .as_str()
                        .filter(|t| t.contains(place))
                        .map(str::to_owned)
                })
                .unwrap_or_default()
        }
    };
    let text = message("A3 / 3 / 301").await;
    assert!(
        text.contains("确认收到：https://safety.school.example/ack/"),
        "{text}"
    );
    let token = ack_token(&text);
    assert_eq!(token.len(), 43, "256 bits in base64url: {token}");
    let id = gw.rules.open.read().expect("snapshot")[0].id;
    let state = || {
        gw.rules
            .open
            .read()
            .expect("snapshot")
            .iter()
            .find(|a| a.id == id)
            .map(|a| (a.state, a.acked_by.clone()))
    };
    let http = common::http_client();
    let url = |t: &str| format!("http://{}/ack/{t}", gw.web_addr);
    let origin = format!("http://{}", gw.web_addr);

    // A preview and the person's own tap: nothing changes.
    let mut html = String::new();
    for _ in 0..2 {
        let r = http.get(url(&token)).send().await.expect("GET");
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .is_ok_and(|c| c.contains("default-src 'self'")));
        assert_eq!(r.headers()["cache-control"], "no-store");
        html = r.text().await.unwrap_or_default();
    }
    assert!(
        html.contains("确认收到") && html.contains("A3 / 3 / 301") && html.contains("张伟"),
        "{html}"
    );
    assert_eq!(state(), Some((State::Unacked, None)), "GET changes nothing");
    let nonce = nonce_of(&html);
    let post = |nonce: String, origin: String| {
        let http = &http;
        let u = url(&token);
        async move {
            let r = http
                .post(u)
                .header("Origin", origin)
                .form(&[("nonce", nonce)])
                .send()
                .await
                .expect("POST");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    // Without the page's nonce, or from another site: refused.
    let (code, _) = post("1.forged".into(), origin.clone()).await;
    assert_eq!(code, 403);
    let (code, _) = post(nonce.clone(), "https://evil.example".into()).await;
    assert_eq!(code, 403);
    assert_eq!(state(), Some((State::Unacked, None)));

    let (code, page) = post(nonce.clone(), origin.clone()).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("已确认") && page.contains("张伟"), "{page}");
    eventually("the alarm acknowledged as the person's user", || async {
        state() == Some((State::Acked, Some("zhangwei".into())))
    })
    .await;
    let audit = gw.auth.audit_log(20).expect("audit log");
    assert!(
        audit.iter().any(|e| e.user == "zhangwei"
            && e.action == "ack"
            && e.detail == "acknowledged by 张伟 from the message link"),
        "{audit:#?}"
    );

    // A second use: refused, clearly.
    let (code, page) = post(nonce, origin.clone()).await;
    assert_eq!(code, 410, "{page}");
    assert!(page.contains("已经用过"), "{page}");
    let r = http.get(url(&token)).send().await.expect("GET");
    assert_eq!(r.status(), 410);

    // Garbage and a well-formed token this gateway never made.
    for t in ["garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let r = http.get(url(t)).send().await.expect("GET");
        assert_eq!(r.status(), 404);
        assert!(r.text().await.unwrap_or_default().contains("链接无效"));
    }

    // A link past its expiry (1 s for building B1).
    let (topic, body) = smoke("b1-101");
    publisher.publish(&topic, body, QoS::AtLeastOnce).await;
    publisher.flush().await;
    let late = ack_token(&message("B1 / 1 / 101").await);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = http.get(url(&late)).send().await.expect("GET");
    assert_eq!(r.status(), 410);
    assert!(r.text().await.unwrap_or_default().contains("已过期"));
    let b1 = gw
        .rules
        .open
        .read()
        .expect("snapshot")
        .iter()
        .find(|a| a.device == "b1-101")
        .map(|a| a.state);
    assert_eq!(b1, Some(State::Unacked));

    assert_eq!(gw.metrics.ack_links("acknowledged"), 1);
    assert_eq!(gw.metrics.ack_links("used"), 2);
    assert_eq!(gw.metrics.ack_links("unknown"), 2);
    assert_eq!(gw.metrics.ack_links("expired"), 1);
    gw.stop().await;
}

/// The gateway process killed with SIGKILL while an escalation step is
/// pending: after the restart the step fires, once; the receiver counts the
/// idempotency keys — none twice, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_step_fires_once_after_a_kill_9() {
    use common::gwproc::GatewayProcess;
    use common::{eventually, feed, gateway, Mosquitto, Publisher, QoS};
    let robots = Robots::start();
    let broker = Mosquitto::start();
    let mut gw = GatewayProcess::new();
    let config = format!(
        r#"[gateway]
data_dir = "{data}"
shutdown_timeout = "2s"
[mqtt]
url = "{mqtt}"
client_id = "gw-notify-kill-{pid}"
[[devices]]
id = "a3-301"
kind = "smoke"
site = "yazhong"
building = "A3"
{rule}
[notify]
group_wait = "0s"
[[notify.people]]
id = "zhang"
name = "张伟"
[[notify.people]]
id = "wang"
name = "王处长"
[notify.teams.security]
members = ["zhang"]
lead = "wang"
[[notify.shifts]]
team = "security"
people = ["zhang"]
[notify.channels.hook]
type = "webhook"
url = "{base}/webhook"
secret = "{secret}"
[notify.policies.fire]
steps = [
  {{ after = "0s", notify = ["on_duty:security"], channels = ["hook"] }},
  {{ after = "6s", notify = ["lead:security"], channels = ["hook"] }},
]
[[notify.routes]]
policy = "fire"
"#,
        data = gw.data_dir().display(),
        mqtt = broker.url(),
        pid = std::process::id(),
        rule = gateway::smoke_rule("Smoke at {location}"),
        base = robots.url(),
        secret = robots::WEBHOOK_SECRET,
    );
    gw.start(&config);
    let publisher = Publisher::connect(&broker.url()).await;
    let mut p = feed::payload("smoke", common::now_ms(), 1);
    p["alarm"] = serde_json::json!(true);
    publisher
        .publish(
            "campus/yazhong/smoke/a3-301",
            p.to_string(),
            QoS::AtLeastOnce,
        )
        .await;
    publisher.flush().await;
    let sent = r#"campusgw_notifications_total{channel="hook",result="sent"}"#;
    // The first step recorded as sent (so a resend would be a defect, not
    // the at-least-once edge of a kill between sending and recording).
    eventually("the first step recorded as sent", || async {
        tokio::task::block_in_place(|| gw.metric(sent)) >= 1.0
    })
    .await;
    let keys = || -> Vec<String> {
        robots
            .requests()
            .into_iter()
            .filter(|r| r["verified"] == true)
            .filter_map(|r| r["headers"]["idempotency-key"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(keys().len(), 1, "{:?}", keys());
    tokio::task::block_in_place(|| {
        gw.kill();
        gw.start_again();
    });
    // The lead's step, pending at the kill, is sent by the new process.
    eventually("the pending step sent after the restart", || async {
        tokio::task::block_in_place(|| gw.metric(sent)) >= 1.0
    })
    .await;
    let got = keys();
    let mut counts = std::collections::BTreeMap::new();
    for k in &got {
        *counts.entry(k.as_str()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 2, "both steps, none missing: {got:?}");
    assert!(counts.values().all(|n| *n == 1), "none twice: {got:?}");
    assert!(
        counts.keys().any(|k| k.contains(":step:0:"))
            && counts.keys().any(|k| k.contains(":step:1:")),
        "{got:?}"
    );
    gw.stop();
}
