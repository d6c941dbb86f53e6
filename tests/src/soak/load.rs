//! The soak's steady mixed load: client threads calling the edge like apps do — JSON calls,
//! streams read to the end, provider errors, and streams the client abandons mid-way — each
//! outcome kept with the event id the edge named in its answer ([`edge_worker::EVENT_ID_HEADER`]).
//!
//! A [`Gate`] lets the fault injector drain the edge the way a load balancer would before a
//! restart: clients finish the call they are in and send nothing new until it reopens.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

/// What a call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallKind {
    /// Chat, Responses or Embeddings without streaming.
    Json,
    /// A stream read to its end.
    Stream,
    /// The provider answers 500, 429 or 400.
    ProviderError,
    /// A slow stream the client drops after its first bytes.
    ClientAbort,
}

impl CallKind {
    pub const ALL: [CallKind; 4] = [
        CallKind::Json,
        CallKind::Stream,
        CallKind::ProviderError,
        CallKind::ClientAbort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CallKind::Json => "json",
            CallKind::Stream => "stream",
            CallKind::ProviderError => "provider_error",
            CallKind::ClientAbort => "client_abort",
        }
    }

    /// The mix: 45% JSON, 30% streams, 12% provider errors, 13% aborts.
    fn pick(rng: &mut fastrand::Rng) -> CallKind {
        match rng.u32(..100) {
            0..45 => CallKind::Json,
            45..75 => CallKind::Stream,
            75..87 => CallKind::ProviderError,
            _ => CallKind::ClientAbort,
        }
    }
}

/// How one call ended, as the client saw it.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub kind: CallKind,
    pub started: Instant,
    pub ended: Instant,
    /// The HTTP status, when the edge answered at all.
    pub status: Option<u16>,
    /// The edge's event id, when it named one.
    pub event_id: Option<Uuid>,
    /// Transport error or unreadable answer (edge down, connection reset).
    pub error: Option<String>,
}

impl Outcome {
    pub fn latency(&self) -> Duration {
        self.ended - self.started
    }
}

/// Lets the fault injector hold new calls back and wait for the ones in flight.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
}

impl Gate {
    /// Holds new calls back and waits (up to `within`) for those in flight to end.
    pub fn close_and_drain(&self, within: Duration) -> bool {
        self.closed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + within;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }

    /// Waits until the gate is open and counts the caller in; `false` when `stop` was set.
    fn enter(&self, stop: &AtomicBool) -> bool {
        loop {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            if !self.closed.load(Ordering::SeqCst) {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                if !self.closed.load(Ordering::SeqCst) {
                    return true;
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The clients' shared state: where to call, with which keys, and what they saw.
#[derive(Debug)]
pub struct Load {
    pub edge_base_url: String,
    /// `(app key, user)` pairs to call with.
    pub callers: Vec<(String, String)>,
    pub gate: Gate,
    pub stop: AtomicBool,
    pub outcomes: Mutex<Vec<Outcome>>,
}

impl Load {
    pub fn new(edge_base_url: String, callers: Vec<(String, String)>) -> Arc<Load> {
        Arc::new(Load {
            edge_base_url,
            callers,
            gate: Gate::default(),
            stop: AtomicBool::new(false),
            outcomes: Mutex::new(Vec::new()),
        })
    }

    /// Event ids clients were given so far.
    pub fn seen_ids(&self) -> Vec<Uuid> {
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|o| o.event_id)
            .collect()
    }

    /// Starts `clients` threads, each pausing `think` (± half) between calls.
    pub fn spawn_clients(
        self: &Arc<Self>,
        clients: usize,
        think: Duration,
        seed: u64,
    ) -> Vec<JoinHandle<()>> {
        (0..clients)
            .map(|c| {
                let load = self.clone();
                std::thread::spawn(move || load.client(seed.wrapping_add(c as u64), think))
            })
            .collect()
    }

    fn client(&self, seed: u64, think: Duration) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut rng = fastrand::Rng::with_seed(seed);
        let think_ms = think.as_millis() as u64;
        while self.gate.enter(&self.stop) {
            let kind = CallKind::pick(&mut rng);
            let outcome = self.call(&agent, kind, &mut rng);
            self.gate.leave();
            self.outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(outcome);
            if think_ms > 0 {
                std::thread::sleep(Duration::from_millis(think_ms / 2 + rng.u64(..=think_ms)));
            }
        }
    }

    fn call(&self, agent: &ureq::Agent, kind: CallKind, rng: &mut fastrand::Rng) -> Outcome {
        let (key, user) = &self.callers[rng.usize(..self.callers.len())];
        let (path, body) = request_for(kind, rng);
        let started = Instant::now();
        let sent = agent
            .post(&format!("{}/{path}", self.edge_base_url))
            .header("authorization", &format!("Bearer {key}"))
            .header("x-tollgate-user", user)
            .header("x-tollgate-task", kind.name())
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes());
        let mut outcome = Outcome {
            kind,
            started,
            ended: started,
            status: None,
            event_id: None,
            error: None,
        };
        match sent {
            Ok(mut resp) => {
                outcome.status = Some(resp.status().as_u16());
                outcome.event_id = resp
                    .headers()
                    .get(edge_worker::EVENT_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| Uuid::parse_str(v).ok());
                let mut reader = resp.body_mut().as_reader();
                let read = if kind == CallKind::ClientAbort {
                    // The first bytes, then hang up: dropping the reader closes the connection.
                    let mut first = [0u8; 64];
                    reader.read(&mut first).map(|_| ())
                } else {
                    std::io::copy(&mut reader, &mut std::io::sink()).map(|_| ())
                };
                if let Err(e) = read {
                    outcome.error = Some(format!("reading the answer: {e}"));
                }
            }
            Err(e) => outcome.error = Some(e.to_string()),
        }
        outcome.ended = Instant::now();
        outcome
    }
}

/// The request of one call: `(path under /v1, JSON body)` with the mock's steering.
fn request_for(kind: CallKind, rng: &mut fastrand::Rng) -> (&'static str, Value) {
    let usage = json!({"prompt_tokens": 50 + rng.u64(..2000), "completion_tokens": 5 + rng.u64(..400),
        "cached_tokens": if rng.bool() { 32 } else { 0 }});
    let chat = |model: &str, stream: bool, mock: Value| {
        json!({"model": model, "stream": stream, "mock": mock,
            "messages": [{"role": "user", "content": "soak"}]})
    };
    match kind {
        CallKind::Json => match rng.u8(..4) {
            0 => (
                "embeddings",
                json!({"model": "text-embedding-3-small", "input": ["soak"], "mock": {"usage": usage}}),
            ),
            1 => (
                "responses",
                json!({"model": "gpt-4.1", "input": "soak", "mock": {"usage": usage}}),
            ),
            2 => (
                "chat/completions",
                chat(
                    "openrouter/anthropic/claude-sonnet-4.5",
                    false,
                    json!({"usage": usage}),
                ),
            ),
            _ => (
                "chat/completions",
                chat("gpt-4o-mini", false, json!({"usage": usage})),
            ),
        },
        CallKind::Stream => (
            "chat/completions",
            chat(
                if rng.bool() {
                    "gpt-4o"
                } else {
                    "openrouter/google/gemini-2.5-flash"
                },
                true,
                json!({"usage": usage, "chunks": 2 + rng.usize(..6), "chunk_delay_ms": 10}),
            ),
        ),
        CallKind::ProviderError => {
            let status = [500, 429, 400][rng.usize(..3)];
            (
                "chat/completions",
                chat("gpt-4o-mini", rng.bool(), json!({ "status": status })),
            )
        }
        CallKind::ClientAbort => (
            "chat/completions",
            chat(
                "gpt-4o-mini",
                true,
                json!({"usage": usage, "chunks": 12, "chunk_delay_ms": 100}),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_lets_calls_in_flight_end_and_holds_new_ones_back() {
        let gate = Arc::new(Gate::default());
        let stop = AtomicBool::new(false);
        assert!(gate.enter(&stop));
        let g = gate.clone();
        let closer = std::thread::spawn(move || g.close_and_drain(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!closer.is_finished(), "drained while a call was in flight");
        gate.leave();
        assert!(closer.join().unwrap());
        // Closed: a new call waits until the gate opens (or the load stops).
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.enter(&AtomicBool::new(false)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        gate.open();
        assert!(waiter.join().unwrap());
        stop.store(true, Ordering::SeqCst);
        assert!(!gate.enter(&stop));
    }
}
