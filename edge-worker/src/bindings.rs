//! The worker's bindings, read once per isolate: vars parsed into [`Settings`], secrets, and
//! which optional bindings exist. Bindings cannot change while an isolate lives (a deploy or a
//! secret change starts new isolates), and looking them up on every call — each a trip into the
//! runtime, some a failed lookup that builds an error — was a measurable part of the latency
//! the worker adds.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::cf::{self, Env};

use crate::config::Settings;

thread_local! {
    static SETTINGS: OnceCell<Rc<Settings>> = const { OnceCell::new() };
    static SECRETS: RefCell<HashMap<String, Option<String>>> = RefCell::new(HashMap::new());
    static USAGE_QUEUE: OnceCell<bool> = const { OnceCell::new() };
}

/// A var's text; `None` when unset or empty.
pub fn var(env: &Env, name: &str) -> Option<String> {
    cf::text(env, name)
}

/// This isolate's settings (see `config`).
pub fn settings(env: &Env) -> Rc<Settings> {
    SETTINGS.with(|cell| {
        cell.get_or_init(|| Rc::new(Settings::from_vars(|name| var(env, name))))
            .clone()
    })
}

/// A secret's value; `None` when unset or empty.
pub fn secret(env: &Env, name: &str) -> Option<String> {
    SECRETS.with(|cache| {
        cache
            .borrow_mut()
            .entry(name.to_string())
            .or_insert_with(|| cf::text(env, name))
            .clone()
    })
}

/// Whether the `USAGE_QUEUE` producer is bound.
pub fn has_usage_queue(env: &Env) -> bool {
    USAGE_QUEUE.with(|b| *b.get_or_init(|| env.queue(crate::config::names::USAGE_QUEUE).is_ok()))
}
