//! `demo` (run by `cargo xtask demo`): the whole system on this machine with traffic flowing.
//!
//! Starts (or reuses) the dev ClickHouse, migrates a fresh `tollgate_demo` database, starts the
//! mock provider (OpenAI- and OpenRouter-shaped, realistic latencies, streams, some errors, one
//! model missing from the price table), the collector, dashboard-api and the wasm edge worker
//! under workerd, optionally seeds a back-dated history, then sends traffic through the edge:
//! several orgs, users, apps, models, task types, streams. It prints the dashboard URL and an
//! admin token, and stops everything it started on Ctrl-C (or at the end of `--requests N`).

use chrono::{Datelike, NaiveTime, TimeDelta, Utc};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tollgate_clickhouse::dev_server::{DevServer, Started};
use tollgate_clickhouse::synthetic::{Shape, Synthetic};
use tollgate_e2e::harness::{repo_root, Proc, SIGNING_SECRET};
use tollgate_e2e::mock_provider::{MockOptions, MockProvider};
use tollgate_e2e::stack::{self, BoxError, StackConfig};
use usage_core::wire::{self, BatchFormat};

#[derive(Parser)]
#[command(name = "demo", about = "Run all of Tollgate locally with demo traffic")]
struct Args {
    /// Send this many requests, check they all arrived, and exit (default: run until Ctrl-C).
    #[arg(long)]
    requests: Option<u64>,
    /// Send traffic for this long, e.g. `90s`, `10m` (default: until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Seed a back-dated history first, e.g. `90d`, so charts and projections have data.
    #[arg(long, value_parser = parse_days)]
    history: Option<u32>,
    /// Keep everything running after `--requests`/`--duration` until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// Call the real providers with OPENAI_API_KEY / OPENROUTER_API_KEY from the environment
    /// instead of the mock.
    #[arg(long)]
    real_providers: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s or 10m"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: use s, m or h")),
    }
}

fn parse_days(s: &str) -> Result<u32, String> {
    s.trim_end_matches('d')
        .parse()
        .map_err(|_| format!("`{s}` is not a number of days like 90d"))
}

const DB: &str = "tollgate_demo";
/// dashboard-api ↔ edge (key lookups, budgets).
const INTERNAL_SECRET: &str = "demo-internal-secret-0123456789";
const DASHBOARD: &str = "127.0.0.1:8080";
const COLLECTOR: &str = "127.0.0.1:8081";
const EDGE: &str = "127.0.0.1:8787";
const MOCK: &str = "127.0.0.1:8799";
const ORGS: &[(&str, &[&str], &[&str])] = &[
    (
        "org_000",
        &["user_000_0001", "user_000_0002", "user_000_0003"],
        &["support-bot", "search"],
    ),
    ("org_001", &["user_001_0001", "user_001_0002"], &["copilot"]),
    (
        "org_002",
        &[
            "user_002_0001",
            "user_002_0002",
            "user_002_0003",
            "user_002_0004",
        ],
        &["etl", "summariser"],
    ),
];
/// (model, endpoint, weight): the mix of calls. `acme-internal-llm` is not in the price table.
const MODELS: &[(&str, &str, u32)] = &[
    ("gpt-4o-mini", "chat", 40),
    ("gpt-4o", "chat", 12),
    ("gpt-4.1", "responses", 8),
    ("openrouter/anthropic/claude-sonnet-4.5", "chat", 10),
    ("openrouter/google/gemini-2.5-flash", "chat", 10),
    ("text-embedding-3-small", "embeddings", 8),
    ("o4-mini", "chat", 6),
    ("acme-internal-llm", "chat", 3),
];
const TASKS: &[&str] = &["chat", "summarize", "extract", "classify"];

fn step(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn done(pb: ProgressBar, msg: &str) {
    if pb.is_hidden() {
        println!("✔ {msg}"); // not a terminal: plain lines instead of spinners
    }
    pb.finish_with_message(format!("✔ {msg}"));
}

fn port_free(addr: &str) -> Result<(), BoxError> {
    if std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_millis(200)).is_ok() {
        return Err(
            format!("{addr} is already in use (another demo running?); stop it first").into(),
        );
    }
    Ok(())
}

/// Creates one app key per (org, app) through dashboard-api: `(secret, org, app)`.
async fn create_keys(admin: &str) -> Result<Vec<(String, String, String)>, BoxError> {
    let mut keys = Vec::new();
    for (org, _, apps) in ORGS {
        for app in apps.iter() {
            let secret = stack::create_app_key(
                &format!("http://{DASHBOARD}"),
                admin,
                org,
                app,
                &format!("demo {app}"),
            )
            .await?;
            keys.push((secret, org.to_string(), app.to_string()));
        }
    }
    Ok(keys)
}

struct Stats {
    budget: AtomicU64,
    sent: AtomicU64,
    answered: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

/// One call through the edge, chosen from the mix by `n`.
fn call(
    agent: &ureq::Agent,
    keys: &[(String, String, String)],
    n: u64,
    rng: &mut fastrand::Rng,
    real: bool,
) -> Result<(u16, bool), String> {
    let (key, org, _) = &keys[rng.usize(..keys.len())];
    let users = ORGS
        .iter()
        .find(|(o, _, _)| o == org)
        .map_or(&[][..], |(_, u, _)| *u);
    let user = users
        .get(rng.usize(..users.len().max(1)))
        .copied()
        .unwrap_or("");
    let total: u32 = MODELS.iter().map(|m| m.2).sum();
    let mut pick = rng.u32(..total);
    let (model, endpoint) = MODELS
        .iter()
        .find(|(_, _, w)| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .map_or(("gpt-4o-mini", "chat"), |(m, e, _)| (*m, *e));
    let stream = endpoint != "embeddings" && rng.u8(..10) < 4;
    let prompt = 200 + rng.u64(..3000);
    let completion = 20 + rng.u64(..600);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "cached_tokens": if rng.bool() { prompt / 3 } else { 0 },
        "reasoning_tokens": if model.starts_with('o') { completion / 2 } else { 0 }});
    // Steering for the mock provider; real providers would refuse the unknown field.
    let mock = if real {
        Value::Null
    } else {
        json!({"usage": usage, "chunks": 2 + rng.usize(..8)})
    };
    let (path, mut body) = match endpoint {
        "embeddings" => (
            "embeddings",
            json!({"model": model, "input": ["some text to embed"], "mock": mock}),
        ),
        "responses" => (
            "responses",
            json!({"model": model, "input": "hello", "stream": stream, "mock": mock}),
        ),
        _ => (
            "chat/completions",
            json!({"model": model, "stream": stream,
            "messages": [{"role": "user", "content": format!("demo request {n}")}], "mock": mock}),
        ),
    };
    if real {
        if let Some(o) = body.as_object_mut() {
            o.remove("mock");
        }
    }
    let task = TASKS[rng.usize(..TASKS.len())];
    let mut resp = agent
        .post(&format!("http://{EDGE}/v1/{path}"))
        .header("authorization", &format!("Bearer {key}"))
        .header("x-tollgate-user", user)
        .header("x-tollgate-task", task)
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok((status, status == 429 && text.contains("budget_exceeded")))
}

fn traffic(
    keys: Arc<Vec<(String, String, String)>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    limit: Option<u64>,
    clients: usize,
    pb: ProgressBar,
    real: bool,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (keys, stats, stop, pb) = (keys.clone(), stats.clone(), stop.clone(), pb.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .into();
                let mut rng = fastrand::Rng::with_seed(1000 + c as u64);
                while !stop.load(Ordering::SeqCst) {
                    let n = stats.sent.fetch_add(1, Ordering::SeqCst);
                    if limit.is_some_and(|l| n >= l) {
                        stats.sent.fetch_sub(1, Ordering::SeqCst);
                        break;
                    }
                    match call(&agent, &keys, n, &mut rng, real) {
                        Ok((status, budget_refusal)) => {
                            stats.answered.fetch_add(1, Ordering::SeqCst);
                            if (200..300).contains(&status) {
                                stats.ok.fetch_add(1, Ordering::SeqCst);
                            } else if status == 429 && budget_refusal {
                                stats.budget.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(_) => {
                            stats.failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    pb.inc(1);
                    if limit.is_none() {
                        std::thread::sleep(Duration::from_millis(150 + rng.u64(..400)));
                    }
                }
            })
        })
        .collect()
}

/// POSTs a back-dated history (`days` days up to yesterday) to the collector.
fn seed_history(days: u32) -> Result<u64, BoxError> {
    let today = Utc::now().date_naive().and_time(NaiveTime::MIN).and_utc();
    let per_day = 400u64;
    let n = u64::from(days) * per_day;
    let shape = Shape {
        orgs: 3,
        users_per_org: 4,
        apps_per_org: 2,
        start: today - TimeDelta::days(i64::from(days)),
        span: TimeDelta::days(i64::from(days)),
    };
    let records: Vec<_> = Synthetic::new(42, n, shape).collect();
    let pb = ProgressBar::new(n);
    pb.set_style(
        ProgressStyle::with_template("  history [{bar:40}] {pos}/{len} records")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for chunk in records.chunks(2_000) {
        let body = wire::encode_batch(chunk, BatchFormat::Ndjson);
        loop {
            let sig = wire::sign(SIGNING_SECRET.as_bytes(), Utc::now().timestamp(), &body);
            let status = agent
                .post(&format!("http://{COLLECTOR}/v1/records"))
                .header(wire::SIGNATURE_HEADER, &sig)
                .send(&body[..])
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status == 202 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(n)
}

async fn overview_requests(token: &str, from: &str) -> Result<u64, BoxError> {
    let v = admin_get(token, &format!("/api/v1/overview?from={from}")).await?;
    Ok(v["current"]["requests"].as_u64().unwrap_or(0))
}

/// The alerts raised by the default rules (jobs/src/default_rules.rs) so far, as
/// `(rule name, org)`; and how many default rules there are.
async fn default_rule_alerts(token: &str) -> Result<(usize, Vec<(String, String)>), BoxError> {
    let rules = admin_get(token, "/api/v1/alert-rules").await?;
    let defaults: Vec<(&str, &str)> = rules
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["created_by"] == tollgate_jobs::default_rules::CREATED_BY)
                .filter_map(|r| Some((r["rule_id"].as_str()?, r["name"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    let alerts = admin_get(token, "/api/v1/alerts").await?;
    let fired = alerts
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    let (_, name) = defaults.iter().find(|(id, _)| x["rule_id"] == *id)?;
                    Some((name.to_string(), x["org_id"].as_str()?.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((defaults.len(), fired))
}

async fn admin_get(token: &str, path: &str) -> Result<Value, BoxError> {
    let url = format!("http://{DASHBOARD}{path}");
    let token = token.to_string();
    let v: Value = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .get(&url)
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .map_err(|e| e.to_string())?;
        let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        serde_json::from_str::<Value>(&text).map_err(|e| e.to_string())
    })
    .await??;
    Ok(v)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let root = repo_root();
    for addr in [DASHBOARD, COLLECTOR, EDGE] {
        port_free(addr)?;
    }
    if !args.real_providers {
        port_free(MOCK)?;
    }
    println!("Tollgate demo — everything runs on this machine (loopback only).\n");

    let pb = step("ClickHouse (dev server)");
    let server = DevServer::for_repo(&root);
    let started_ch = matches!(
        server.start().map_err(|e| format!("ClickHouse: {e}"))?,
        Started::Spawned { .. }
    );
    let demo_dir = root.join("target/demo");
    let mut system = StackConfig {
        clickhouse_url: server.url(),
        database: DB.to_string(),
        dir: demo_dir.clone(),
        collector: COLLECTOR.parse()?,
        dashboard: DASHBOARD.parse()?,
        edge: EDGE.parse()?,
        provider_base_url: "https://api.openai.com/v1".to_string(),
        edge_collector_url: format!("http://{COLLECTOR}/v1/records"),
        internal_secret: INTERNAL_SECRET.to_string(),
        sink_max_delay_ms: 500,
        edge_region: "DEMO".to_string(),
        integrity_interval_secs: 600,
        // Alerts of the default rules show within seconds of the traffic that fires them.
        evaluator_interval_secs: 10,
    };
    let applied = system.migrate_fresh().await?;
    done(
        pb,
        &format!(
            "ClickHouse at {} — database {DB}: {applied} migrations applied",
            server.url()
        ),
    );

    let mut procs: Vec<Proc> = Vec::new();
    std::fs::create_dir_all(&demo_dir)?;
    let _ = std::fs::remove_dir_all(demo_dir.join("spool"));

    let mock = if args.real_providers {
        None
    } else {
        let pb = step("mock provider");
        let m = MockProvider::start_on(
            MOCK,
            MockOptions {
                base_latency_ms: 120,
                chunk_delay_ms: 30,
                error_rate: 0.03,
                seed: 7,
            },
        )
        .await?;
        done(
            pb,
            &format!(
                "mock provider at {} (OpenAI- and OpenRouter-shaped; 3% errors)",
                m.base_url()
            ),
        );
        Some(m)
    };

    let pb = step("collector");
    procs.push(system.start_collector("collector.log")?);
    done(
        pb,
        &format!("collector at http://{COLLECTOR} (log: target/demo/collector.log)"),
    );

    let pb = step("dashboard-api");
    procs.push(system.start_dashboard("dashboard-api.log")?);
    let admin = system.admin_token("demo admin").await?;
    done(pb, &format!("dashboard-api at http://{DASHBOARD}"));

    let pb = step("edge worker (wasm) under workerd");
    let keys = Arc::new(create_keys(&admin).await?);
    // Budgets: org_001's small hard daily budget gets hit (it has no thresholds of its own, so
    // its default rule warns at 80 %); org_000's soft one raises alerts at its thresholds.
    let dashboard = system.dashboard_url();
    stack::admin_post(
        &dashboard,
        &admin,
        "/api/v1/budgets",
        json!({"org_id": "org_001", "name": "copilot daily cap", "scope": "org",
        "period": "daily", "limit_usd": "0.05", "mode": "hard", "soft_thresholds": []}),
    )
    .await?;
    stack::admin_post(
        &dashboard,
        &admin,
        "/api/v1/budgets",
        json!({"org_id": "org_000", "name": "support monthly", "scope": "org",
        "period": "monthly", "limit_usd": "0.40", "mode": "soft", "soft_thresholds": [25, 50, 75]}),
    )
    .await?;
    if let Some(m) = &mock {
        system.provider_base_url = m.base_url();
    }
    let mut bindings = system.edge_bindings();
    if args.real_providers {
        bindings.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "PROVIDERS" | "OPENAI_API_KEY" | "OPENROUTER_API_KEY"
            )
        });
        for k in ["OPENAI_API_KEY", "OPENROUTER_API_KEY"] {
            bindings.push((k.to_string(), std::env::var(k).unwrap_or_default()));
        }
    }
    bindings.retain(|(k, _)| k != "UPSTREAM_TIMEOUT_MS");
    procs.push(system.start_edge(&bindings, "workerd.log")?);
    done(
        pb,
        &format!("edge worker at http://{EDGE}/v1 (OpenAI-compatible)"),
    );

    if let Some(days) = args.history {
        println!("Seeding {days} days of history …");
        let n = tokio::task::spawn_blocking(move || seed_history(days)).await??;
        println!("✔ {n} back-dated records sent to the collector");
    }

    let today = Utc::now().date_naive();
    let today_param = format!(
        "{:04}-{:02}-{:02}",
        today.year(),
        today.month(),
        today.day()
    );
    let (key, _, _) = &keys[0];
    println!(
        "\nDashboard:     http://{DASHBOARD}/ (sign in with the admin token)   API: http://{DASHBOARD}/api/v1/overview   OpenAPI: http://{DASHBOARD}/openapi.json\n\
         Admin token:   {admin}\n\
         Try it:        curl -H 'authorization: Bearer {admin}' 'http://{DASHBOARD}/api/v1/overview?from={today_param}'\n\
         Edge (for SDKs): base_url=http://{EDGE}/v1  api_key={key}\n\
         Analysts (SQL): curl '{ch}/?user=analyst&database={DB}' --data-binary 'SELECT * FROM ai_usage_summary'   (docs/ANALYSTS.md)\n",
        ch = server.url(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats {
        budget: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let pb = match args.requests {
        Some(n) => {
            let pb = ProgressBar::new(n);
            pb.set_style(
                ProgressStyle::with_template(
                    "  traffic [{bar:40}] {pos}/{len} requests ({per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb
        }
        None => {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} traffic: {pos} requests sent — Ctrl-C to stop",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        }
    };
    let clients = traffic(
        keys.clone(),
        stats.clone(),
        stop.clone(),
        args.requests,
        args.clients,
        pb.clone(),
        args.real_providers,
    );
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut interrupted = false;
    loop {
        if clients.iter().all(std::thread::JoinHandle::is_finished) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop.store(true, Ordering::SeqCst);
        }
        tokio::select! {
            _ = &mut ctrl_c => { interrupted = true; stop.store(true, Ordering::SeqCst); break; }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    pb.finish();
    let (sent, answered, ok) = (
        stats.sent.load(Ordering::SeqCst),
        stats.answered.load(Ordering::SeqCst),
        stats.ok.load(Ordering::SeqCst),
    );
    let refused = stats.budget.load(Ordering::SeqCst);
    println!(
        "Sent {sent} requests: {answered} answered ({ok} OK, {refused} refused by org_001's hard budget, {} provider errors), {} not answered.",
        answered - ok - refused,
        stats.failed.load(Ordering::SeqCst)
    );

    let mut mismatch = false;
    if !interrupted {
        // Every answered call is one record: wait for the pipeline to deliver them all.
        let pb = step("waiting for every call to reach the dashboard");
        let wait = Instant::now();
        let mut seen = 0;
        while wait.elapsed() < Duration::from_secs(60) {
            seen = overview_requests(&admin, &today_param).await.unwrap_or(0);
            if seen >= answered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if seen == answered {
            done(pb, &format!("the dashboard's overview for today shows {seen} requests = {answered} answered"));
        } else {
            pb.finish_and_clear();
            eprintln!(
                "✘ the dashboard's overview shows {seen} requests, but {answered} were answered"
            );
            mismatch = true;
        }
        // Every org got the default alert rules with its first key; the evaluator (every 10 s
        // here) turns the traffic into their alerts — org_001's budget at least.
        let pb = step("waiting for the default alert rules to fire");
        let wait = Instant::now();
        let (mut rules, mut fired) = (0, Vec::new());
        while wait.elapsed() < Duration::from_secs(45) {
            (rules, fired) = default_rule_alerts(&admin).await.unwrap_or_default();
            if !fired.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if fired.is_empty() {
            pb.finish_and_clear();
            eprintln!("✘ {rules} default alert rules, none fired within 45 s");
            mismatch = true;
        } else {
            let list: Vec<String> = fired.iter().map(|(n, o)| format!("{n} ({o})")).collect();
            done(
                pb,
                &format!("{rules} default alert rules; firing: {}", list.join(", ")),
            );
        }
        if args.keep_running || (args.requests.is_none() && args.duration.is_none()) {
            println!("\nRunning until Ctrl-C …");
            let _ = ctrl_c.await;
        }
    }

    println!("\nStopping …");
    for p in procs.iter_mut().rev() {
        p.terminate(Duration::from_secs(15));
    }
    drop(mock);
    if started_ch {
        let _ = server.stop();
        println!("✔ stopped ClickHouse (this demo started it)");
    }
    println!("✔ all demo processes stopped");
    if mismatch {
        return Err(
            "the dashboard did not show every answered call, or no default rule fired".into(),
        );
    }
    Ok(())
}
