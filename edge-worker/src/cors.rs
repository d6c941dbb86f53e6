//! CORS for browser apps that call the edge directly (`CORS_ALLOWED_ORIGINS`). Off by default:
//! no origin is allowed, a preflight is answered 403 and real answers carry no CORS headers,
//! so a page on another site cannot use a key it has somehow obtained. An allowed origin gets
//! its preflight answered (204, the routes' methods, the headers it asked for, cached 10
//! minutes) and real answers — successes, refusals and streams alike — that name it in
//! `Access-Control-Allow-Origin` and expose Tollgate's own response headers.
//!
//! `CORS_ALLOWED_ORIGINS` is a comma-separated list of origins (`https://app.example.com`),
//! or `*` for any origin (answers still name the caller's origin, never `*`, since apps send an
//! `Authorization` header).

/// Response headers a browser script may read.
const EXPOSED: &str = "x-tollgate-event-id, x-tollgate-budget-warning, retry-after, x-request-id";
/// What a preflight answer allows, and how long a browser may keep it.
const METHODS: &str = "GET, POST, OPTIONS";
const MAX_AGE_SECS: &str = "600";

/// Which origins may call the edge from a browser.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    any: bool,
    origins: Vec<String>,
}

impl CorsPolicy {
    /// Reads `CORS_ALLOWED_ORIGINS` (absent or empty: none).
    pub fn parse(var: Option<&str>) -> CorsPolicy {
        let mut policy = CorsPolicy::default();
        for origin in var.unwrap_or("").split(',').map(str::trim) {
            match origin {
                "" => {}
                "*" => policy.any = true,
                o => policy
                    .origins
                    .push(o.trim_end_matches('/').to_ascii_lowercase()),
            }
        }
        policy
    }

    /// Whether a request from `origin` may be answered with CORS headers.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        !origin.is_empty() && origin != "null" && (self.any || self.origins.contains(&origin))
    }

    /// Headers for a real answer to a request from `origin` (none when it is not allowed).
    pub fn answer_headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        match origin.filter(|o| self.allows(o)) {
            Some(o) => vec![
                ("access-control-allow-origin", o.trim().to_string()),
                ("access-control-expose-headers", EXPOSED.to_string()),
                ("vary", "Origin".to_string()),
            ],
            None => Vec::new(),
        }
    }

    /// Headers for a preflight from an allowed `origin` asking for `requested_headers`.
    pub fn preflight_headers(
        &self,
        origin: &str,
        requested_headers: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("access-control-allow-origin", origin.trim().to_string()),
            ("access-control-allow-methods", METHODS.to_string()),
            ("access-control-max-age", MAX_AGE_SECS.to_string()),
            ("vary", "Origin, Access-Control-Request-Headers".to_string()),
        ];
        if let Some(req) = requested_headers.map(str::trim).filter(|r| !r.is_empty()) {
            // Header names only: anything else would be refused by the browser anyway.
            let names: Vec<&str> = req
                .split(',')
                .map(str::trim)
                .filter(|n| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .collect();
            h.push(("access-control-allow-headers", names.join(", ")));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_allowed_unless_configured() {
        let none = CorsPolicy::parse(None);
        assert!(!none.allows("https://app.example.com"));
        assert!(none
            .answer_headers(Some("https://app.example.com"))
            .is_empty());
        let list = CorsPolicy::parse(Some(" https://App.example.com/ , https://b.example "));
        assert!(list.allows("https://app.example.com"));
        assert!(list.allows("https://b.example"));
        assert!(!list.allows("https://evil.example"));
        assert!(!list.allows("null"));
        let any = CorsPolicy::parse(Some("*"));
        assert!(any.allows("https://anything.example"));
        let h = any.answer_headers(Some("https://anything.example"));
        assert_eq!(
            h[0],
            (
                "access-control-allow-origin",
                "https://anything.example".to_string()
            ),
            "the caller's origin, never *"
        );
    }

    #[test]
    fn a_preflight_allows_the_routes_methods_and_the_requested_header_names() {
        let p = CorsPolicy::parse(Some("https://app.example.com"));
        let h = p.preflight_headers(
            "https://app.example.com",
            Some("authorization, content-type, x-stainless-os, bad header\r\n"),
        );
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("access-control-allow-methods"),
            Some("GET, POST, OPTIONS")
        );
        assert_eq!(
            get("access-control-allow-headers"),
            Some("authorization, content-type, x-stainless-os")
        );
    }
}
