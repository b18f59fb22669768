//! Redaction of credentials in URLs: the one function every log line, health
//! detail, error message and print that shows a URL goes through.

use std::borrow::Cow;

/// What stands in for a hidden secret.
const HIDDEN: &str = "***";

/// Query keys whose values are secrets (InfluxDB 1.x takes `u`/`p`).
const SECRET_KEYS: &[&str] = &["p", "password", "token", "secret", "key"];

/// `text` with the user info of every URL in it (`scheme://user:pass@host`)
/// and the values of secret query keys (`?p=…`) replaced by `***`. Works on
/// a bare URL and on a message that contains one (a reqwest error names its
/// URL), so callers need not know which they hold.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        // The URL runs to the first character a URL in a message does not hold.
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '`' | '>' | ','))
            .unwrap_or(rest.len());
        let (url, tail) = rest.split_at(end);
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let (authority, path) = url.split_at(authority_end);
        match authority.rfind('@') {
            Some(at) => {
                out.push_str(HIDDEN);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        out.push_str(&redact_query(path));
        rest = tail;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `path?query#fragment` with secret query values hidden.
fn redact_query(path: &str) -> Cow<'_, str> {
    let Some((before, query)) = path.split_once('?') else {
        return Cow::Borrowed(path);
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}={HIDDEN}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{before}?{}", pairs.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Cow::Owned(out)
}

/// Whether a URL carries credentials that belong in a secret instead.
pub fn has_credentials(url: &str) -> bool {
    redact_urls(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_and_secret_query_values_are_hidden() {
        for (input, want) in [
            ("http://db:8086", "http://db:8086"),
            ("http://user:pa55@db:8086", "http://***@db:8086"),
            ("https://user@db:8086/x?db=a", "https://***@db:8086/x?db=a"),
            ("http://a:b@c@db/write?db=x&p=pw", "http://***@db/write?db=x&p=***"),
            ("http://db/write?u=me&password=pw#f", "http://db/write?u=me&password=***#f"),
            (
                "error sending request for url (http://u:secret@127.0.0.1:8086/write?db=x): refused",
                "error sending request for url (http://***@127.0.0.1:8086/write?db=x): refused",
            ),
            ("mqtt://op:pw@broker:1883 and http://h", "mqtt://***@broker:1883 and http://h"),
            ("no url here", "no url here"),
        ] {
            assert_eq!(redact_urls(input), want, "{input}");
        }
        assert!(has_credentials("http://u:p@h"));
        assert!(!has_credentials("http://h:8086/"));
    }
}
