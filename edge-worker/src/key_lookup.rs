//! Where a presented app key is looked up: dashboard-api's signed lookup (cached per isolate),
//! or — without `KEYS_URL`, in local runs and tests — the `APP_KEYS` var. What the answers mean
//! is [`crate::keys`].

use std::cell::OnceCell;
use std::collections::HashMap;

use crate::bindings::{secret, var};
use crate::cf::{console_error, now_ms, Env};
use crate::config::Settings;
use crate::keys::{self, AppKey};
use crate::web;

thread_local! {
    static LOCAL_KEYS: OnceCell<HashMap<String, AppKey>> = const { OnceCell::new() };
}

/// How long a dashboard key lookup may take before the request is refused (or a stale
/// answer used).
const KEY_LOOKUP_TIMEOUT_MS: u64 = 5_000;

thread_local! {
    /// Dashboard lookup answers of this isolate (see `keys` for the delay this implies).
    static REMOTE_KEYS: std::cell::RefCell<keys::KeyCache> =
        std::cell::RefCell::new(keys::KeyCache::default());
}

/// The key with this hash: from the dashboard's signed lookup (`KEYS_URL` +
/// `KEYS_SIGNING_SECRET`, cached), else from the `APP_KEYS` var. The `keys` module docs say how
/// long a revocation takes to arrive.
pub async fn lookup_key(env: &Env, settings: &Settings, hash: &str) -> Option<AppKey> {
    if let (Some(base), Some(signing)) = (
        &settings.keys_url,
        secret(env, crate::config::names::KEYS_SIGNING_SECRET),
    ) {
        return remote_key(base, &signing, settings.keys_cache_ms, hash).await;
    }
    let key = LOCAL_KEYS.with(|cell| {
        cell.get_or_init(|| {
            match var(env, crate::config::names::APP_KEYS).map(|j| keys::parse_table(&j)) {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    console_error!("tollgate: {e}");
                    HashMap::new()
                }
                None => HashMap::new(),
            }
        })
        .get(hash)
        .cloned()
    });
    keys::usable(key)
}

/// The dashboard's answer for `hash`: cached while fresh; asked for otherwise; an expired
/// answer stands in only when asking fails.
async fn remote_key(base: &str, signing: &str, ttl_ms: u64, hash: &str) -> Option<AppKey> {
    let now = now_ms();
    let stale = match REMOTE_KEYS.with(|c| c.borrow().get(hash, now)) {
        keys::CacheHit::Fresh(key) => return keys::usable(key),
        keys::CacheHit::Stale(key) => Some(key),
        keys::CacheHit::Miss => None,
    };
    let answer = match fetch_key(base, signing, hash).await {
        keys::LookupAnswer::Found(key) => Some(key),
        keys::LookupAnswer::NotFound => None,
        keys::LookupAnswer::Failed(why) => {
            console_error!("tollgate: {why}");
            return stale.flatten();
        }
    };
    REMOTE_KEYS.with(|c| c.borrow_mut().put(hash, answer.clone(), now_ms(), ttl_ms));
    keys::usable(answer)
}

/// One signed `GET <KEYS_URL>/internal/v1/keys/<hash>`.
async fn fetch_key(base: &str, signing: &str, hash: &str) -> keys::LookupAnswer {
    let failed = |what: String| keys::LookupAnswer::Failed(format!("key lookup: {what}"));
    // Signed over the path, so a captured signature is good for this key's lookup only.
    let signature = usage_core::wire::sign(
        signing.as_bytes(),
        (now_ms() / 1000) as i64,
        format!("/internal/v1/keys/{hash}").as_bytes(),
    );
    let prepared = web_sys::Headers::new().and_then(|headers| {
        headers.set(usage_core::wire::SIGNATURE_HEADER, &signature)?;
        let init = web::request_init("GET", &headers, None);
        let controller = web_sys::AbortController::new()?;
        init.set_signal(Some(&controller.signal()));
        Ok((init, controller))
    });
    let (init, controller) = match prepared {
        Ok(p) => p,
        Err(e) => return failed(web::error_text(&e)),
    };
    let url = keys::lookup_url(base, hash);
    match web::within(Box::pin(web::fetch(&url, &init)), KEY_LOOKUP_TIMEOUT_MS).await {
        Some(Ok(resp)) => match web::response_bytes(&resp).await {
            Ok(body) => keys::read_lookup(resp.status(), &body),
            Err(e) => failed(e),
        },
        Some(Err(e)) => failed(e),
        None => {
            controller.abort();
            failed(format!("no answer within {KEY_LOOKUP_TIMEOUT_MS} ms"))
        }
    }
}
