//! The soak's figures: requests by kind, faults by kind, records lost and duplicated, rollup
//! checks, client latency overall and during faults — as JSON (`target/bench/soak.json`) and as
//! the `soak` section of docs/BENCHMARKS.md — and the verdict.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use super::faults::{Fault, FaultKind};
use super::load::{CallKind, Outcome};
use super::reconcile::{RollupCheck, Stored};
use super::witness::Acks;
use super::SoakOptions;

/// Everything the report is made from.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub opts: &'a SoakOptions,
    pub load_time: Duration,
    /// From the end of the load until every expected record was stored.
    pub delivery: Duration,
    pub outcomes: &'a [Outcome],
    pub faults: &'a [Fault],
    pub acked: &'a Acks,
    pub stored: &'a HashMap<Uuid, Stored>,
    pub rollups: [&'a RollupCheck; 2],
    pub rejects: u64,
    pub dashboard_requests: u64,
    /// On a cluster: how long after the reconciliation the replicas had converged (no
    /// replication queue, equal rows per shard), `Some(None)` if they did not.
    pub replicas_converged: Option<Option<Duration>>,
}

/// Client latency percentiles (ms) over a set of calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub calls: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if ms.is_empty() {
                0.0
            } else {
                ms[((ms.len() - 1) as f64 * q).round() as usize]
            }
        };
        Latency {
            calls: ms.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        }
    }

    fn json(&self) -> Value {
        json!({"calls": self.calls, "p50_ms": round2(self.p50_ms), "p99_ms": round2(self.p99_ms)})
    }
}

/// Per call kind: sent, answered with an event id, answered without one, not answered.
#[derive(Clone, Copy, Debug, Default)]
pub struct KindCounts {
    pub sent: u64,
    pub answered: u64,
    pub answered_without_id: u64,
    pub unanswered: u64,
}

/// The soak's result.
#[derive(Debug)]
pub struct Report {
    pub json: Value,
    pub markdown: String,
    /// Empty when everything reconciled.
    pub failures: Vec<String>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `10m 3s`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m {}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Report {
    pub fn build(i: Inputs<'_>) -> Report {
        let mut kinds: BTreeMap<CallKind, KindCounts> = CallKind::ALL
            .iter()
            .map(|k| (*k, KindCounts::default()))
            .collect();
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        for o in i.outcomes {
            let c = kinds.entry(o.kind).or_default();
            c.sent += 1;
            match (o.status, o.event_id) {
                (Some(_), Some(_)) => c.answered += 1,
                (Some(_), None) => c.answered_without_id += 1,
                (None, _) => c.unanswered += 1,
            }
            if let Some(s) = o.status {
                *statuses.entry(s).or_default() += 1;
            }
        }

        // Latency: calls answered in full (aborts end when the client hangs up).
        let during = |o: &Outcome| {
            i.faults
                .iter()
                .any(|f| o.started < f.ended && o.ended > f.started)
        };
        let full: Vec<&Outcome> = i
            .outcomes
            .iter()
            .filter(|o| o.status.is_some() && o.kind != CallKind::ClientAbort)
            .collect();
        let ms = |o: &&Outcome| o.latency().as_secs_f64() * 1000.0;
        let overall = Latency::of(full.iter().map(ms).collect());
        let in_faults = Latency::of(full.iter().filter(|o| during(o)).map(ms).collect());
        let outside = Latency::of(full.iter().filter(|o| !during(o)).map(ms).collect());

        let mut faults: BTreeMap<FaultKind, (u64, Duration)> = FaultKind::rotation(i.opts.cluster)
            .iter()
            .map(|k| (*k, (0, Duration::ZERO)))
            .collect();
        for f in i.faults {
            let e = faults.entry(f.kind).or_default();
            e.0 += 1;
            e.1 += f.ended - f.started;
        }
        let drains: Vec<Duration> = i.faults.iter().filter_map(|f| f.drain).collect();
        let max_drain = drains.iter().max().copied().unwrap_or_default();

        // Reconciliation.
        let answered: Vec<(&Outcome, Uuid)> = i
            .outcomes
            .iter()
            .filter_map(|o| o.event_id.map(|id| (o, id)))
            .collect();
        let lost: Vec<&(&Outcome, Uuid)> = answered
            .iter()
            .filter(|(_, id)| !i.stored.contains_key(id))
            .collect();
        let lost_answered: Vec<Uuid> = lost.iter().map(|(_, id)| *id).collect();
        // What kind of call each lost one was, how it ended, and how long it took: the first
        // thing to know when chasing a loss.
        let lost_calls: Vec<String> = lost
            .iter()
            .take(5)
            .map(|(o, id)| {
                format!(
                    "{id} ({}, status {:?}, {} ms{})",
                    o.kind.name(),
                    o.status,
                    o.latency().as_millis(),
                    o.error
                        .as_deref()
                        .map(|e| format!(", {e}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let lost_acked: Vec<Uuid> = i
            .acked
            .ids
            .iter()
            .filter(|id| !i.stored.contains_key(id))
            .copied()
            .collect();
        let duplicates: u64 = i.stored.values().map(|s| s.rows.saturating_sub(1)).sum();
        let rows: u64 = i.stored.values().map(|s| s.rows).sum();
        let status_mismatches: Vec<String> = answered
            .iter()
            .filter_map(|(o, id)| {
                let s = i.stored.get(id)?;
                (Some(s.status_code) != o.status).then(|| {
                    format!(
                        "{id}: client saw {:?}, stored {} ({})",
                        o.status, s.status_code, s.error_class
                    )
                })
            })
            .collect();
        let not_acked = i
            .stored
            .keys()
            .filter(|id| !i.acked.ids.contains(id))
            .count();
        let aborted_as_aborted = answered
            .iter()
            .filter(|(o, id)| {
                o.kind == CallKind::ClientAbort
                    && i.stored.get(id).is_some_and(|s| s.error_class == "aborted")
            })
            .count();

        let mut failures = Vec::new();
        let answered_n = answered.len();
        if answered_n < 100 {
            failures.push(format!(
                "only {answered_n} calls were answered: the load did not run"
            ));
        }
        if !lost_answered.is_empty() {
            failures.push(format!(
                "{} answered calls have no row, e.g. {}",
                lost_answered.len(),
                lost_calls.join("; ")
            ));
        }
        if !lost_acked.is_empty() {
            failures.push(format!(
                "{} records acknowledged by the collector have no row, e.g. {:?}",
                lost_acked.len(),
                &lost_acked[..lost_acked.len().min(5)]
            ));
        }
        if duplicates > 0 {
            failures.push(format!("{duplicates} duplicate rows in usage_events"));
        }
        for r in i.rollups {
            if !r.mismatches.is_empty() {
                failures.push(format!(
                    "{} differs from the raw rows in {} of {} groups, e.g. {}",
                    r.table,
                    r.mismatches.len(),
                    r.groups,
                    r.mismatches[0]
                ));
            }
        }
        if !status_mismatches.is_empty() {
            failures.push(format!(
                "{} rows disagree with the status the client saw, e.g. {}",
                status_mismatches.len(),
                status_mismatches[0]
            ));
        }
        if i.rejects > 0 || i.acked.rejected > 0 {
            failures.push(format!(
                "{} records refused as bad data ({} in usage_rejects)",
                i.acked.rejected, i.rejects
            ));
        }
        if i.dashboard_requests != rows {
            failures.push(format!(
                "the dashboard overview shows {} requests, usage_events holds {rows}",
                i.dashboard_requests
            ));
        }

        if i.replicas_converged == Some(None) {
            failures.push(
                "the replicas did not converge (replication queue left, or a shard's replicas differ)"
                    .to_string(),
            );
        }

        let minutes = i.opts.duration.as_secs_f64() / 60.0;
        let command = format!(
            "cargo xtask soak --minutes {}{}",
            fmt_minutes(minutes),
            if i.opts.cluster { " --cluster" } else { "" }
        );
        let json = json!({
            "command": command,
            "load_seconds": round2(i.load_time.as_secs_f64()),
            "delivery_after_load_seconds": round2(i.delivery.as_secs_f64()),
            "clients": i.opts.clients,
            "think_ms": i.opts.think.as_millis() as u64,
            "fault_every_seconds": i.opts.fault_every.as_secs(),
            "seed": i.opts.seed,
            "requests": {
                "sent": i.outcomes.len(),
                "answered_with_event_id": answered_n,
                "by_kind": kinds.iter().map(|(k, c)| (k.name().to_string(), json!({
                    "sent": c.sent, "answered": c.answered,
                    "answered_without_event_id": c.answered_without_id, "unanswered": c.unanswered,
                }))).collect::<serde_json::Map<_, _>>(),
                "by_status": statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            },
            "faults": {
                "total": i.faults.len(),
                "by_kind": faults.iter().map(|(k, (n, d))| (k.name().to_string(), json!({
                    "count": n,
                    "mean_seconds": if *n > 0 { round2(d.as_secs_f64() / *n as f64) } else { 0.0 },
                }))).collect::<serde_json::Map<_, _>>(),
                "workerd_drain_max_seconds": round2(max_drain.as_secs_f64()),
            },
            "records": {
                "stored_rows": rows,
                "acknowledged_by_collector": i.acked.ids.len(),
                "stored_not_seen_acknowledged": not_acked,
                "lost_answered": lost_answered.len(),
                "lost_acknowledged": lost_acked.len(),
                "duplicates": duplicates,
                "status_mismatches": status_mismatches.len(),
                "client_aborts_recorded_as_aborted": aborted_as_aborted,
                "rejected": i.acked.rejected + i.rejects,
                "collector_batches_acknowledged": i.acked.batches,
                "collector_posts_failed": i.acked.failed_posts,
                "collector_acks_lost": i.acked.lost_acks,
            },
            "collectors": i.opts.collectors,
            "cluster": i.opts.cluster,
            "replicas_converged_after_seconds": i.replicas_converged.map(|c| c.map(|d| round2(d.as_secs_f64()))),
            "rollups": i.rollups.iter().map(|r| (r.table.to_string(), json!({
                "groups": r.groups, "mismatches": r.mismatches.len(),
            }))).collect::<serde_json::Map<_, _>>(),
            "dashboard_overview_requests": i.dashboard_requests,
            "latency_ms": {
                "overall": overall.json(),
                "during_faults": in_faults.json(),
                "outside_faults": outside.json(),
            },
            "passed": failures.is_empty(),
            "failures": failures,
        });

        let mut md = String::new();
        let (title, figures) = if i.opts.cluster {
            (
                "Soak on the cluster: the whole stack under load while replicas and ZooKeeper fail",
                "`target/bench/soak-cluster.json`",
            )
        } else {
            (
                "Soak: the whole stack under load while its pieces fail",
                "`target/bench/soak.json`; `cargo xtask test` runs a 3-minute one",
            )
        };
        let _ = writeln!(md, "## {title}\n");
        let _ = writeln!(md, "Command: `{command}` (figures: {figures}).\n");
        let _ = writeln!(
            md,
            "The wasm edge under workerd, the mock provider, {} collector(s) behind a round-robin load \
             balancer, {} and dashboard-api (app keys are looked up there; its \
             integrity job runs every 10 s), on loopback. {} clients call the edge \
             ({} ms ± half between calls): 45% JSON (chat, responses, embeddings, OpenRouter), 30% streams \
             read to the end, 12% provider errors (500/429/400), 13% streams the client hangs up on after \
             the first bytes. A fault every ~{} s, in rotation: SIGKILL of one collector (down 0.2–3 s), \
             lost acks (for 3 s the balancer answers 502 to batches a collector accepted, so the edge \
             re-posts them, to the other collector), \
             {}, workerd restart (drained, then SIGTERM — see \
             docs/OPERATIONS.md), provider stall (4 s, past the edge's 3 s upstream timeout). Then every \
             event id a client got in `x-tollgate-event-id`, and every record the collector acknowledged \
             (noted by a pass-through between edge and collector), is looked up in `usage_events`, and \
             `usage_daily` / `usage_hourly` are compared with the raw rows per (period, org, app, user, task, \
             provider) on ten sums.{}\n",
            i.opts.collectors,
            if i.opts.cluster {
                "a database of its own on the dev cluster (ClickHouse 18.16, 2 shards × 2 replicas, \
                 ZooKeeper 3.8; the collectors and dashboard-api talk to the first server)"
            } else {
                "a private ClickHouse 18.16"
            },
            i.opts.clients,
            i.opts.think.as_millis(),
            i.opts.fault_every.as_secs(),
            if i.opts.cluster {
                "SIGKILL of one of the four servers (down 2–6 s), ZooKeeper SIGKILL (down 3–5 s; then \
                 a server whose distributed-DDL worker stopped is restarted, as docs/OPERATIONS.md says)"
            } else {
                "ClickHouse restart (SIGTERM, down 2–6 s)"
            },
            if i.opts.cluster {
                " Last, every host's replication queue must be empty and the two replicas of each \
                 shard must hold the same raw rows."
            } else {
                ""
            },
        );
        let _ = writeln!(md, "| result | value |\n|---|---:|");
        let _ = writeln!(md, "| load | {} |", human(i.load_time));
        let _ = writeln!(md, "| requests sent | {} |", i.outcomes.len());
        let _ = writeln!(md, "| answered with an event id | {answered_n} |");
        let _ = writeln!(
            md,
            "| records acknowledged by the collector | {} |",
            i.acked.ids.len()
        );
        let _ = writeln!(md, "| rows in `usage_events` | {rows} |");
        let _ = writeln!(
            md,
            "| **records lost** (answered / acknowledged) | **{} / {}** |",
            lost_answered.len(),
            lost_acked.len()
        );
        let _ = writeln!(
            md,
            "| 202s lost on the way back (re-posted by the edge) | {} |",
            i.acked.lost_acks
        );
        let _ = writeln!(md, "| **duplicates** | **{duplicates}** |");
        for r in i.rollups {
            let _ = writeln!(
                md,
                "| **`{}` groups ≠ raw** | **{} of {}** |",
                r.table,
                r.mismatches.len(),
                r.groups
            );
        }
        let _ = writeln!(
            md,
            "| rows whose status differs from the client's | {} |",
            status_mismatches.len()
        );
        let _ = writeln!(
            md,
            "| dashboard overview requests | {} |",
            i.dashboard_requests
        );
        let _ = writeln!(
            md,
            "| all delivered, after the load stopped | {:.1} s |",
            i.delivery.as_secs_f64()
        );
        match i.replicas_converged {
            Some(Some(d)) => {
                let _ = writeln!(
                    md,
                    "| **replicas converged**, after the rollups were exact | **{:.1} s** |",
                    d.as_secs_f64()
                );
            }
            Some(None) => {
                let _ = writeln!(md, "| **replicas converged** | **no** |");
            }
            None => {}
        }
        let _ = writeln!(md, "\n| call kind | sent | answered | answered without id | no answer |\n|---|---:|---:|---:|---:|");
        for (k, c) in &kinds {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                k.name(),
                c.sent,
                c.answered,
                c.answered_without_id,
                c.unanswered
            );
        }
        let _ = writeln!(
            md,
            "\n| fault | injected | mean time until back |\n|---|---:|---:|"
        );
        for (k, (n, d)) in &faults {
            let mean = if *n > 0 {
                d.as_secs_f64() / *n as f64
            } else {
                0.0
            };
            let _ = writeln!(md, "| {} | {n} | {mean:.1} s |", k.name());
        }
        let _ = writeln!(md, "| total | {} | |", i.faults.len());
        let _ = writeln!(md, "\n| client latency, answered calls (aborts excluded) | calls | p50 ms | p99 ms |\n|---|---:|---:|---:|");
        for (name, l) in [
            ("overall", overall),
            ("overlapping a fault", in_faults),
            ("outside faults", outside),
        ] {
            let _ = writeln!(
                md,
                "| {name} | {} | {:.1} | {:.1} |",
                l.calls, l.p50_ms, l.p99_ms
            );
        }
        let _ = writeln!(
            md,
            "\nCalls \"answered without id\" are refusals before a record exists (e.g. a key lookup that \
             failed while ClickHouse was down); \"no answer\" are connections refused while workerd \
             restarted. Neither has a record, by design. Latency overlapping a fault includes provider \
             stalls (the 504s after 3 s) and the collector's restarts; workerd's drain holds calls back \
             before they start, so it does not show here (longest drain: {:.1} s).",
            max_drain.as_secs_f64()
        );
        let _ = writeln!(
            md,
            "\nVerdict: {}",
            if failures.is_empty() {
                "**passed** — nothing lost, nothing duplicated, rollups exact.".to_string()
            } else {
                format!("**failed** — {}", failures.join("; "))
            }
        );
        Report {
            json,
            markdown: md,
            failures,
        }
    }
}

fn fmt_minutes(m: f64) -> String {
    if (m - m.round()).abs() < 1e-9 {
        format!("{}", m.round() as u64)
    } else {
        format!("{m:.2}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn opts() -> SoakOptions {
        SoakOptions {
            duration: Duration::from_secs(180),
            fault_every: Duration::from_secs(18),
            clients: 2,
            collectors: 2,
            think: Duration::from_millis(10),
            seed: 1,
            dir: std::env::temp_dir(),
            cluster: false,
        }
    }

    /// 200 answered calls, each acknowledged and stored once; one fault over the first 10.
    fn world() -> (Vec<Outcome>, Vec<Fault>, Acks, HashMap<Uuid, Stored>) {
        let t0 = Instant::now();
        let mut outcomes = Vec::new();
        let mut acks = Acks::default();
        let mut stored = HashMap::new();
        for n in 0..200u64 {
            let id = Uuid::from_u128(u128::from(n) + 1);
            let started = t0 + Duration::from_millis(n * 10);
            outcomes.push(Outcome {
                kind: CallKind::ALL[n as usize % 4],
                started,
                ended: started + Duration::from_millis(if n < 10 { 3_000 } else { 5 }),
                status: Some(200),
                event_id: Some(id),
                error: None,
            });
            acks.ids.insert(id);
            stored.insert(
                id,
                Stored {
                    rows: 1,
                    status_code: 200,
                    error_class: "none".into(),
                },
            );
        }
        outcomes.push(Outcome {
            kind: CallKind::Json,
            started: t0,
            ended: t0,
            status: None,
            event_id: None,
            error: Some("connection refused".into()),
        });
        let faults = vec![Fault {
            kind: FaultKind::ProviderStall,
            started: t0,
            ended: t0 + Duration::from_millis(95),
            drain: None,
        }];
        (outcomes, faults, acks, stored)
    }

    fn verdict(
        w: &(Vec<Outcome>, Vec<Fault>, Acks, HashMap<Uuid, Stored>),
        daily: &RollupCheck,
        dashboard_requests: u64,
    ) -> Report {
        build(&opts(), w, daily, dashboard_requests, None)
    }

    fn build(
        opts: &SoakOptions,
        w: &(Vec<Outcome>, Vec<Fault>, Acks, HashMap<Uuid, Stored>),
        daily: &RollupCheck,
        dashboard_requests: u64,
        replicas_converged: Option<Option<Duration>>,
    ) -> Report {
        let hourly = RollupCheck {
            table: "usage_hourly",
            groups: 3,
            mismatches: vec![],
        };
        Report::build(Inputs {
            opts,
            load_time: Duration::from_secs(180),
            delivery: Duration::from_secs(1),
            outcomes: &w.0,
            faults: &w.1,
            acked: &w.2,
            stored: &w.3,
            rollups: [daily, &hourly],
            rejects: 0,
            dashboard_requests,
            replicas_converged,
        })
    }

    #[test]
    fn replicas_that_do_not_converge_fail_a_cluster_soak() {
        let w = world();
        let daily = RollupCheck {
            table: "usage_daily",
            groups: 3,
            mismatches: vec![],
        };
        let opts = SoakOptions {
            cluster: true,
            ..opts()
        };
        let report = |replicas| build(&opts, &w, &daily, 200, replicas);
        let converged = report(Some(Some(Duration::from_secs(2))));
        assert!(converged.failures.is_empty(), "{:?}", converged.failures);
        assert!(converged.markdown.contains("--cluster"));
        assert!(converged.markdown.contains("replica_sigkill"));
        let apart = report(Some(None));
        assert_eq!(apart.failures.len(), 1, "{:?}", apart.failures);
        assert!(apart.failures[0].contains("did not converge"));
    }

    fn exact() -> RollupCheck {
        RollupCheck {
            table: "usage_daily",
            groups: 3,
            mismatches: vec![],
        }
    }

    #[test]
    fn a_clean_run_passes_and_reports_its_figures() {
        let w = world();
        let r = verdict(&w, &exact(), 200);
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        assert_eq!(r.json["requests"]["sent"], 201);
        assert_eq!(r.json["requests"]["by_kind"]["json"]["unanswered"], 1);
        assert_eq!(r.json["records"]["duplicates"], 0);
        assert_eq!(r.json["faults"]["by_kind"]["provider_stall"]["count"], 1);
        // The slow calls overlapped the fault; the rest did not.
        assert!(
            r.json["latency_ms"]["during_faults"]["p50_ms"]
                .as_f64()
                .unwrap()
                >= 3_000.0
        );
        assert!(
            r.json["latency_ms"]["outside_faults"]["p99_ms"]
                .as_f64()
                .unwrap()
                < 10.0
        );
        assert!(r
            .markdown
            .contains("Command: `cargo xtask soak --minutes 3`"));
        assert!(r.markdown.contains("**passed**"));
    }

    #[test]
    fn a_lost_row_a_duplicate_or_a_rollup_off_fails_the_run() {
        let mut lost = world();
        let gone = Uuid::from_u128(7);
        lost.3.remove(&gone);
        let r = verdict(&lost, &exact(), 199);
        assert_eq!(r.json["records"]["lost_answered"], 1);
        assert_eq!(r.json["records"]["lost_acknowledged"], 1);
        assert_eq!(r.failures.len(), 2, "{:?}", r.failures);

        let mut twice = world();
        twice.3.get_mut(&Uuid::from_u128(9)).unwrap().rows = 2;
        let r = verdict(&twice, &exact(), 201);
        assert_eq!(r.json["records"]["duplicates"], 1);
        assert!(
            r.failures.iter().any(|f| f.contains("1 duplicate")),
            "{:?}",
            r.failures
        );

        let off = RollupCheck {
            table: "usage_daily",
            groups: 3,
            mismatches: vec!["usage_daily 2026-01-01/org: raw … vs rollup …".into()],
        };
        let r = verdict(&world(), &off, 200);
        assert!(
            r.failures.iter().any(|f| f.contains("usage_daily differs")),
            "{:?}",
            r.failures
        );
        assert!(r.markdown.contains("**failed**"));

        let mut wrong_status = world();
        wrong_status
            .3
            .get_mut(&Uuid::from_u128(3))
            .unwrap()
            .status_code = 504;
        let r = verdict(&wrong_status, &exact(), 200);
        assert!(
            r.failures.iter().any(|f| f.contains("status")),
            "{:?}",
            r.failures
        );
    }
}
