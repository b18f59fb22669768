//! The topic matcher: `TopicPattern::parse` on arbitrary patterns, then
//! `matches` on arbitrary topics. Input: `pattern \n topic`. Invariants:
//! never panics; a topic made from the pattern's own filter (wildcards
//! replaced by a level) matches it.
#![no_main]

use campus_gateway::sources::decode::TopicPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, topic) = text.split_once('\n').unwrap_or((text, "campus/a/smoke/b"));
    let Ok(p) = TopicPattern::parse(pattern) else {
        return;
    };
    let _ = p.matches(topic);
    let filter = p.filter();
    let concrete: Vec<&str> = filter
        .split('/')
        .map(|l| match l {
            "+" => "x",
            "#" => "rest",
            l => l,
        })
        .collect();
    let concrete = concrete.join("/");
    assert!(
        p.matches(&concrete).is_some(),
        "{pattern:?} does not match {concrete:?} made from its filter {filter:?}"
    );
});
