//! Outbound HTTP: the one client the background jobs use to call out — webhook deliveries
//! ([`crate::notify`]) and the provider admin APIs ([`crate::pollers`], [`crate::reconcile`]).
//!
//! [`send`] runs a blocking `ureq` request on tokio's blocking pool (these calls are few: a
//! poll every few minutes, a notification per alert change), with one time limit for the whole
//! exchange, no redirects (a webhook must not be bounced somewhere else), and bodies capped at
//! [`MAX_BODY_BYTES`]. Any HTTP status is an answer, not an error: callers decide what a 401
//! or a 503 means.
//!
//! [`Target`] says whether loopback and private addresses are allowed. Webhook URLs are chosen
//! by org admins, so by default they may not reach into the deployment's own network — a
//! webhook pointed at ClickHouse's HTTP interface would otherwise run its `query=` parameter.
//! The check resolves the host before the request; a DNS answer that changes between the check
//! and the connection (rebinding) is not caught, so deployments that need a hard guarantee also
//! filter egress at the network level.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

/// Longest response body read (the rest is dropped).
pub const MAX_BODY_BYTES: u64 = 4 << 20;

/// A request's method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// Which addresses a request may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Any address (provider APIs: their base URLs come from the operator's config).
    Any,
    /// Public addresses only (webhooks).
    PublicOnly,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Why no answer came.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The URL cannot be used (malformed, or a private address where only public ones may be
    /// reached). Retrying does not help.
    #[error("refused: {0}")]
    Refused(String),
    /// Connection, TLS, timeout or protocol trouble. Retrying may help.
    #[error("{0}")]
    Network(String),
}

/// One request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
    pub target: Target,
}

impl Request {
    pub fn get(url: impl Into<String>, timeout: Duration) -> Request {
        Request {
            method: Method::Get,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout,
            target: Target::Any,
        }
    }

    pub fn post(url: impl Into<String>, body: Vec<u8>, timeout: Duration) -> Request {
        Request {
            method: Method::Post,
            body: Some(body),
            ..Request::get(url, timeout)
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// Sends `request` and reads the answer, off the async threads.
pub async fn send(request: Request) -> Result<Answer, OutboundError> {
    tokio::task::spawn_blocking(move || send_blocking(&request))
        .await
        .map_err(|e| OutboundError::Network(format!("request task failed: {e}")))?
}

fn send_blocking(r: &Request) -> Result<Answer, OutboundError> {
    let parts = UrlParts::parse(&r.url)
        .ok_or_else(|| OutboundError::Refused("not an http(s) URL with a host".into()))?;
    if r.target == Target::PublicOnly {
        check_public(&parts)?;
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(r.timeout))
        .user_agent("tollgate-dashboard-api")
        .build()
        .into();
    let result = match (r.method, &r.body) {
        (Method::Get, _) => {
            let mut req = agent.get(&r.url);
            for (k, v) in &r.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            req.call()
        }
        (Method::Post, body) => {
            let mut req = agent.post(&r.url);
            for (k, v) in &r.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            req.send(body.as_deref().unwrap_or_default())
        }
    };
    let mut response = result.map_err(|e| OutboundError::Network(describe(&e, &r.url)))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_string()
        .unwrap_or_default();
    Ok(Answer { status, body })
}

/// A short description of a transport failure (never the URL: it may carry a secret).
fn describe(e: &ureq::Error, url: &str) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Io(io) => format!("i/o error: {}", io.kind()),
        other => {
            let text = other.to_string().replace(url, &redact(url));
            text.chars().take(200).collect()
        }
    }
}

/// The parts of an `http(s)://` URL this module needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlParts {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Whether anything follows the authority (a path other than `/`, a query).
    pub has_path: bool,
}

impl UrlParts {
    pub fn parse(url: &str) -> Option<UrlParts> {
        let (scheme, rest) = url.split_once("://")?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (hostport.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(UrlParts {
            scheme: scheme.to_string(),
            host: host.to_ascii_lowercase(),
            port,
            has_path: !(tail.is_empty() || tail == "/"),
        })
    }
}

/// `url` without anything after the host and port, for logs and delivery records: webhook paths
/// (Slack's above all) are secrets.
pub fn redact(url: &str) -> String {
    match UrlParts::parse(url) {
        Some(p) => {
            let host = if p.host.contains(':') {
                format!("[{}]", p.host)
            } else {
                p.host.clone()
            };
            let default = if p.scheme == "https" { 443 } else { 80 };
            let port = if p.port == default {
                String::new()
            } else {
                format!(":{}", p.port)
            };
            let tail = if p.has_path { "/…" } else { "" };
            format!("{}://{host}{port}{tail}", p.scheme)
        }
        None => "(invalid URL)".into(),
    }
}

fn check_public(parts: &UrlParts) -> Result<(), OutboundError> {
    let addrs: Vec<IpAddr> = match parts.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (parts.host.as_str(), parts.port)
            .to_socket_addrs()
            .map_err(|_| OutboundError::Network("host not found".into()))?
            .map(|a| a.ip())
            .collect(),
    };
    match addrs.iter().find(|ip| !is_public(**ip)) {
        Some(ip) => Err(OutboundError::Refused(format!(
            "{ip} is a loopback, private or link-local address \
             (notifications.allow_private_targets is off)"
        ))),
        None => Ok(()),
    }
}

/// Whether `ip` is a globally routable unicast address (as far as a webhook is concerned).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link-local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_redacted() {
        let p = UrlParts::parse("https://hooks.slack.com/services/T0/B0/secret").unwrap();
        assert_eq!(
            (p.scheme.as_str(), p.host.as_str(), p.port, p.has_path),
            ("https", "hooks.slack.com", 443, true)
        );
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("http://127.0.0.1:9000/"), "http://127.0.0.1:9000");
        assert_eq!(redact("http://u:p@[::1]:81/x?y"), "http://[::1]:81/…");
        assert_eq!(redact("ftp://x"), "(invalid URL)");
        assert!(UrlParts::parse("http://:80/").is_none());
        assert!(UrlParts::parse("http://h:notaport/").is_none());
    }

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_before_connecting() {
        let mut r = Request::get("http://127.0.0.1:9/", Duration::from_secs(1));
        r.target = Target::PublicOnly;
        assert!(matches!(send(r).await, Err(OutboundError::Refused(_))));
    }
}
