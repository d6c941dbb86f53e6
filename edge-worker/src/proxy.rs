//! The upstream call: the provider's answer passed to the client — a JSON answer as it is (a
//! copy measured after the response), a stream through a [`Relay`] — and the call recorded in
//! `wait_until`, off the client's path.

use usage_core::{parse_response, Endpoint, ErrorClass};
use uuid::Uuid;

use crate::bindings::secret;
use crate::cf::{self, console_error, Context, Env};
use crate::config::{Provider, Settings};
use crate::errors::ApiError;
use crate::record::{elapsed_ms, facts, finish, record_later, Prepared};
use crate::stream::Relay;
use crate::tap::StreamTap;
use crate::web;

#[allow(clippy::too_many_arguments)]
pub async fn proxy(
    p: Prepared,
    forwarded: Vec<(&str, String)>,
    env: &Env,
    ctx: &Context,
    settings: &Settings,
    started: u64,
    client: &web_sys::AbortSignal,
    extra: &[(&str, String)],
) -> Result<web_sys::Response, ApiError> {
    let provider: &Provider = &p.plan.provider;
    let event_id = p.event_id;
    let key = secret(env, &provider.secret).ok_or_else(|| {
        ApiError::internal(format!(
            "provider `{}` has no key configured (secret {})",
            provider.name, provider.secret
        ))
    })?;
    let url = format!("{}{}", provider.base_url, p.route.upstream_path);
    let internal = |what: &str, e: wasm_bindgen::JsValue| {
        ApiError::internal(format!("{what}: {}", web::error_text(&e)))
    };
    let headers = web_sys::Headers::new().map_err(|e| internal("headers", e))?;
    for (k, v) in &forwarded {
        headers.set(k, v).map_err(|e| internal(k, e))?;
    }
    headers
        .set("authorization", &format!("Bearer {key}"))
        .map_err(|e| internal("authorization", e))?;
    let init = if p.route.has_body {
        headers
            .set("content-type", "application/json")
            .map_err(|e| internal("content-type", e))?;
        web::request_init("POST", &headers, Some(&p.plan.body))
    } else {
        web::request_init("GET", &headers, None)
    };
    // Aborted only when the timer wins: a signal with its own deadline
    // (`AbortSignal.timeout`) would also cut a long stream off after its headers arrived.
    let controller =
        web_sys::AbortController::new().map_err(|e| internal("abort controller", e))?;
    init.set_signal(Some(&controller.signal()));

    let timeout_ms = settings.upstream_timeout_ms;
    let sent = Box::pin(web::fetch(&url, &init));
    let upstream = match web::within(sent, timeout_ms).await {
        Some(Ok(resp)) => resp,
        Some(Err(e)) => {
            console_error!("tollgate: upstream {} unreachable: {e}", provider.name);
            let mut f = facts(&p, started, event_id);
            f.status_code = 502;
            f.error_class = ErrorClass::Network;
            f.upstream_ms = f.latency_ms;
            record_later(env, ctx, f, p.reservations.clone(), p.budget_now);
            return Err(ApiError::upstream_unreachable(&provider.name));
        }
        None => {
            controller.abort();
            let mut f = facts(&p, started, event_id);
            f.status_code = 504;
            f.error_class = ErrorClass::Timeout;
            f.upstream_ms = f.latency_ms;
            record_later(env, ctx, f, p.reservations.clone(), p.budget_now);
            return Err(ApiError::upstream_timeout(&provider.name, timeout_ms));
        }
    };
    let headers_ms = elapsed_ms(started);
    let status = upstream.status();
    let is_sse = upstream
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .is_some_and(|ct| ct.starts_with("text/event-stream"));

    if is_sse && (200..300).contains(&status) {
        return stream_through(
            p, upstream, env, ctx, started, headers_ms, event_id, controller, client, extra,
        );
    }

    // Not a stream: the client gets the provider's response as it is; a tee'd copy is read
    // and measured after the response, off the client's path.
    let copy = upstream.clone().map_err(|e| internal("tee", e))?;
    let mut f = facts(&p, started, event_id);
    f.status_code = status;
    f.error_class = ErrorClass::from_status(status);
    f.upstream_ms = headers_ms;
    let endpoint = p.route.endpoint;
    let env2 = env.clone();
    let (reservations, budget_now) = (p.reservations.clone(), p.budget_now);
    cf::wait_until(ctx, async move {
        match web::response_bytes(&copy).await {
            Ok(bytes) => {
                f.latency_ms = elapsed_ms(started);
                f.response_bytes = bytes.len() as u64;
                if (200..300).contains(&status) && endpoint != Endpoint::Models {
                    if let Ok(parsed) = parse_response(endpoint, &bytes) {
                        f.model_served = parsed.model;
                        f.usage = parsed.usage;
                        f.service_tier_served = parsed.service_tier;
                    }
                }
            }
            Err(_) => {
                f.latency_ms = elapsed_ms(started);
                f.error_class = ErrorClass::Aborted;
            }
        }
        finish(env2, f, reservations, budget_now).await;
    });
    web::relay(&upstream, upstream.body().as_ref(), &[], extra)
        .map_err(|e| internal("building the response", e))
}

/// A streamed answer: the client gets the provider's stream through a [`Relay`], which the
/// call's `wait_until` runs and then records.
#[allow(clippy::too_many_arguments)]
fn stream_through(
    p: Prepared,
    upstream: web_sys::Response,
    env: &Env,
    ctx: &Context,
    started: u64,
    headers_ms: u32,
    event_id: Uuid,
    upstream_abort: web_sys::AbortController,
    client: &web_sys::AbortSignal,
    extra: &[(&str, String)],
) -> Result<web_sys::Response, ApiError> {
    let status = upstream.status();
    let internal = |what: &str, e: wasm_bindgen::JsValue| {
        ApiError::internal(format!("{what}: {}", web::error_text(&e)))
    };
    let tap = StreamTap::new(p.plan.strip_usage_chunk);
    let (client_body, relay) = match upstream.body() {
        Some(body) => {
            let (client_body, relay) = Relay::new(&body, tap, started, upstream_abort, client)
                .map_err(|e| internal("stream relay", e))?;
            (Some(client_body), Some(relay))
        }
        None => (None, None),
    };
    let response = web::relay(
        &upstream,
        client_body.as_ref(),
        &["content-length", "content-encoding", "transfer-encoding"],
        extra,
    )
    .map_err(|e| internal("stream", e))?;

    let mut f = facts(&p, started, event_id);
    f.status_code = status;
    f.upstream_ms = headers_ms;
    let request_bytes = p.request_bytes;
    let env2 = env.clone();
    let (reservations, budget_now) = (p.reservations.clone(), p.budget_now);
    cf::wait_until(ctx, async move {
        match relay {
            Some(relay) => {
                let end = relay.run().await;
                let s = &end.totals.summary;
                f.latency_ms = end.end_ms;
                f.ttft_ms = end.first_byte_ms;
                f.response_bytes = end.totals.bytes_out;
                f.model_served = s.model.clone();
                f.usage = s.usage.clone();
                f.service_tier_served = s.service_tier.clone();
                f.error_class = if end.aborted || s.truncated {
                    ErrorClass::Aborted
                } else if s.error.is_some() {
                    ErrorClass::Upstream5xx
                } else {
                    ErrorClass::None
                };
                if f.usage.is_none() {
                    f.estimated = Some(s.estimate(request_bytes));
                }
            }
            // No body at all: an empty stream, ended as it began.
            None => f.latency_ms = elapsed_ms(started),
        }
        finish(env2, f, reservations, budget_now).await;
    });
    Ok(response)
}
