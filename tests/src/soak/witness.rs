//! The acknowledgement witness: a pass-through between the edge and the collector that notes
//! the `event_id` of every record the collector acknowledged (a `202`, minus the indexes it
//! rejected). The collector's own counters restart with it; this list survives its SIGKILLs,
//! so the soak can check that nothing the collector acknowledged went missing.
//!
//! Forwarding is verbatim (body, signature, content type and encoding); when the collector is
//! down the edge gets a `502`, which it retries as it would a refused connection.
//!
//! With several collectors the witness is also their load balancer: batches go round-robin,
//! so an edge retry reaches another collector than the first try. [`Witness::lose_acks_for`]
//! makes it answer `502` to batches a collector did accept (a 202 lost on the way back): the
//! edge then re-posts records that are already stored, to another collector.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use usage_core::wire;
use uuid::Uuid;

/// Headers the collector reads from a batch POST.
const FORWARDED: &[&str] = &["content-type", "content-encoding", wire::SIGNATURE_HEADER];

/// What the witness saw.
#[derive(Debug, Default)]
pub struct Acks {
    pub ids: HashSet<Uuid>,
    /// Batch POSTs answered 202.
    pub batches: u64,
    /// POSTs the collector did not answer (down, killed mid-request) or answered 429/5xx.
    pub failed_posts: u64,
    /// Records the collector refused as bad data (must stay 0 in a soak).
    pub rejected: u64,
    /// 202s the witness did not pass on (the edge saw a 502 and re-posted).
    pub lost_acks: u64,
}

/// A running witness; stops with the runtime it was started in.
#[derive(Debug)]
pub struct Witness {
    pub addr: SocketAddr,
    pub acks: Arc<Mutex<Acks>>,
    lose_acks_until: Arc<Mutex<Option<Instant>>>,
}

#[derive(Clone)]
struct Forward {
    targets: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    agent: ureq::Agent,
    acks: Arc<Mutex<Acks>>,
    lose_acks_until: Arc<Mutex<Option<Instant>>>,
}

impl Witness {
    /// Listens on a free loopback port and forwards to the collectors' records URLs,
    /// round-robin.
    pub async fn start(collector_records_urls: Vec<String>) -> std::io::Result<Witness> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acks = Arc::new(Mutex::new(Acks::default()));
        let lose_acks_until = Arc::new(Mutex::new(None));
        let state = Forward {
            targets: Arc::new(collector_records_urls),
            next: Arc::new(AtomicUsize::new(0)),
            lose_acks_until: lose_acks_until.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
            acks: acks.clone(),
        };
        let app = Router::new()
            .route("/v1/records", post(forward))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Witness {
            addr,
            acks,
            lose_acks_until,
        })
    }

    /// For `d` from now, answers `502` to batches a collector accepted (their 202 is "lost").
    pub fn lose_acks_for(&self, d: Duration) {
        *self
            .lose_acks_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + d);
    }

    /// The URL the edge posts to.
    pub fn records_url(&self) -> String {
        format!("http://{}/v1/records", self.addr)
    }

    /// How many of `ids` the collector has not acknowledged yet.
    pub fn unacknowledged(&self, ids: &[Uuid]) -> usize {
        self.unacknowledged_of(ids).len()
    }

    /// Those of `ids` the collector has not acknowledged yet.
    pub fn unacknowledged_of(&self, ids: &[Uuid]) -> Vec<Uuid> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .filter(|id| !acks.ids.contains(id))
            .copied()
            .collect()
    }
}

async fn forward(State(f): State<Forward>, headers: HeaderMap, body: Bytes) -> Response {
    let sent: Vec<(String, String)> = FORWARDED
        .iter()
        .filter_map(|h| {
            let v = headers.get(*h)?.to_str().ok()?;
            Some((h.to_string(), v.to_string()))
        })
        .collect();
    let answer = tokio::task::spawn_blocking(move || f.post(&sent, &body)).await;
    match answer {
        Ok(Ok((status, retry_after, text))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut resp = (status, text).into_response();
            if let Some(v) = retry_after.and_then(|v| v.parse().ok()) {
                resp.headers_mut().insert("retry-after", v);
            }
            resp
        }
        Ok(Err(why)) => (StatusCode::BAD_GATEWAY, why).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

impl Forward {
    /// POSTs the batch on; notes what a 202 acknowledged. `(status, retry-after, body)`.
    fn post(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(u16, Option<String>, String), String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len().max(1);
        let target = self.targets.get(n).ok_or("no collector to forward to")?;
        let mut req = self.agent.post(target);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => {
                self.note(|a| a.failed_posts += 1);
                return Err(format!("collector: {e}"));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => {
                self.note(|a| a.failed_posts += 1);
                return Err(format!("collector answer: {e}"));
            }
        };
        if status == 202 {
            self.acknowledge(headers, body, &text)?;
            let lose = self
                .lose_acks_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|until| Instant::now() < until);
            if lose {
                self.note(|a| a.lost_acks += 1);
                return Ok((502, None, "the 202 was lost on its way back".into()));
            }
        } else if status == 429 || status >= 500 {
            self.note(|a| a.failed_posts += 1);
        }
        Ok((status, retry_after, text))
    }

    fn acknowledge(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        answer: &str,
    ) -> Result<(), String> {
        let gzipped = headers
            .iter()
            .any(|(k, v)| k == "content-encoding" && v.contains("gzip"));
        let plain = if gzipped {
            wire::gunzip(body, 256 << 20).map_err(|e| format!("witness: {e}"))?
        } else {
            body.to_vec()
        };
        let records =
            wire::decode_batch(&plain, usize::MAX).map_err(|e| format!("witness: {e}"))?;
        let answer: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
        let rejected: HashSet<usize> = answer["rejected"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x["index"].as_u64())
                    .map(|i| i as usize)
                    .collect()
            })
            .unwrap_or_default();
        self.note(|a| {
            a.batches += 1;
            a.rejected += rejected.len() as u64;
            for r in &records {
                if let (Ok(rec), false) = (&r.record, rejected.contains(&r.index)) {
                    a.ids.insert(rec.event_id);
                }
            }
        });
        Ok(())
    }

    fn note(&self, f: impl FnOnce(&mut Acks)) {
        f(&mut self.acks.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
