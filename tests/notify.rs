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
