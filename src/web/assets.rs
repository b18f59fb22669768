//! The status page, embedded at build time: the binary serves it offline,
//! with no CDN, fonts or tiles from the internet. The script is ES modules
//! served as they are (no build step): `index.html` loads `js/main.js`,
//! which imports the rest by relative path.
//!
//! `/assets/…` answers only the paths in [`FILES`], compared whole, so no
//! request can name anything else (no traversal, no directory listing).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file under `/assets/`: (path after `/assets/`, content type, body).
/// A new module must be added here, or the page's import of it fails (the
/// browser tests load every one).
const FILES: &[(&str, &str, &str)] = &[
    ("app.css", CSS, include_str!("assets/app.css")),
    ("js/main.js", JS, include_str!("assets/js/main.js")),
    ("js/prefs.js", JS, include_str!("assets/js/prefs.js")),
    ("js/i18n.js", JS, include_str!("assets/js/i18n.js")),
    ("js/dom.js", JS, include_str!("assets/js/dom.js")),
    ("js/api.js", JS, include_str!("assets/js/api.js")),
    ("js/store.js", JS, include_str!("assets/js/store.js")),
    ("js/live.js", JS, include_str!("assets/js/live.js")),
    (
        "js/annunciator.js",
        JS,
        include_str!("assets/js/annunciator.js"),
    ),
    ("js/dialogs.js", JS, include_str!("assets/js/dialogs.js")),
    (
        "js/views/alarms.js",
        JS,
        include_str!("assets/js/views/alarms.js"),
    ),
    (
        "js/views/devices.js",
        JS,
        include_str!("assets/js/views/devices.js"),
    ),
    (
        "js/views/buses.js",
        JS,
        include_str!("assets/js/views/buses.js"),
    ),
    (
        "js/views/history.js",
        JS,
        include_str!("assets/js/views/history.js"),
    ),
];

/// `GET /`.
pub(super) async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /assets/{*path}`.
pub(super) async fn file(Path(path): Path<String>) -> Response {
    let Some(&(_, kind, body)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(path: &str) -> Response {
        file(Path(path.to_owned())).await
    }

    #[tokio::test]
    async fn every_module_is_served_as_javascript() {
        for (path, _, _) in FILES.iter().filter(|(p, _, _)| p.ends_with(".js")) {
            let res = get(path).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            assert_eq!(res.headers()[header::CONTENT_TYPE], JS, "{path}");
            assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache", "{path}");
        }
    }

    #[tokio::test]
    async fn anything_else_is_not_found() {
        for path in [
            "app.js",
            "js",
            "js/",
            "js/views",
            "js/../app.css",
            "js/./main.js",
            "/js/main.js",
            "js/main.js/",
            "js\\main.js",
            "JS/MAIN.JS",
            "../Cargo.toml",
        ] {
            assert_eq!(get(path).await.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    /// Every relative import in a module names a file in the table, so a
    /// module added to the page but not here fails this test, not the page.
    #[test]
    fn every_import_is_in_the_table() {
        for (path, _, body) in FILES.iter().filter(|(p, _, _)| p.ends_with(".js")) {
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            for line in body.lines() {
                let Some(rest) = line.split(" from '").nth(1) else {
                    continue;
                };
                let Some(target) = rest.split('\'').next() else {
                    continue;
                };
                let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
                for seg in target.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    FILES.iter().any(|(p, _, _)| *p == resolved),
                    "{path} imports {target} ({resolved}), which is not served"
                );
            }
        }
        assert!(INDEX.contains(r#"<script type="module" src="/assets/js/main.js">"#));
    }
}
