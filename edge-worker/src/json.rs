//! Reading the edge's own JSON documents — config vars, app keys, budgets, the budget guard's
//! requests, answers and ledger — from a parsed [`Value`], field by field.
//!
//! Why not `#[derive(Deserialize)]`: serde generates a deserializer per type, and each carries
//! its own copy of serde_json's parsing and error paths. For these seven types that was 24 KB of
//! the gzipped wasm bundle (measured by removing them). Here every document goes through the one
//! `Value` parser the worker already has, and reading a field is a map lookup. Errors name the
//! field and what was expected. Types are still serialized with serde.

use serde_json::{Map, Value};

/// A type read from a JSON document.
pub trait FromJson: Sized {
    fn from_json(v: &Value) -> Result<Self, String>;
}

/// `bytes` parsed as JSON and read as a `T`.
pub fn parse<T: FromJson>(bytes: &[u8]) -> Result<T, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    T::from_json(&v)
}

/// The JSON array `what` read as a list of `T` (errors name it and the index).
pub fn list<T: FromJson>(v: &Value, what: &str) -> Result<Vec<T>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| format!("{what}: expected a JSON array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| T::from_json(item).map_err(|e| format!("{what}[{i}]: {e}")))
        .collect()
}

/// The fields of a JSON object.
#[derive(Debug)]
pub struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn of(v: &'a Value) -> Result<Fields<'a>, String> {
        v.as_object()
            .map(Fields)
            .ok_or_else(|| "expected a JSON object".to_string())
    }

    /// Refuses a field not in `known` (for config, where a typo must not pass silently).
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!(
                "unknown field `{k}` (expected one of: {})",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    /// A field that must be present (and not null).
    pub fn required(&self, name: &str) -> Result<&'a Value, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Err(format!("missing field `{name}`")),
            Some(v) => Ok(v),
        }
    }

    /// A field that may be absent or null.
    pub fn optional(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn str(&self, name: &str) -> Result<String, String> {
        as_str(name, self.required(name)?)
    }

    /// A string field; absent or null reads as empty.
    pub fn str_or_empty(&self, name: &str) -> Result<String, String> {
        self.optional(name)
            .map_or(Ok(String::new()), |v| as_str(name, v))
    }

    pub fn i64(&self, name: &str) -> Result<i64, String> {
        self.required(name)?
            .as_i64()
            .ok_or_else(|| format!("field `{name}` must be a whole number (64-bit)"))
    }

    /// A `u32` field; absent or null reads as 0.
    pub fn u32_or_zero(&self, name: &str) -> Result<u32, String> {
        self.optional(name).map_or(Ok(0), |v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("field `{name}` must be a whole number 0-4294967295"))
        })
    }

    pub fn bool(&self, name: &str) -> Result<bool, String> {
        self.required(name)?
            .as_bool()
            .ok_or_else(|| format!("field `{name}` must be true or false"))
    }

    /// A boolean field; absent reads as false, `null` is refused (for `revoked`, failing
    /// closed: a key whose revocation cannot be read is not used).
    pub fn bool_or_false(&self, name: &str) -> Result<bool, String> {
        self.0.get(name).map_or(Ok(false), |v| {
            v.as_bool()
                .ok_or_else(|| format!("field `{name}` must be true or false"))
        })
    }

    /// A list of percentages (0–255); absent or null reads as empty.
    pub fn u8s_or_empty(&self, name: &str) -> Result<Vec<u8>, String> {
        let Some(v) = self.optional(name) else {
            return Ok(Vec::new());
        };
        let bad = || format!("field `{name}` must be a list of integers 0-255");
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|n| {
                n.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(bad)
            })
            .collect()
    }

    /// An object field read as `T` (errors are prefixed with the field's name).
    pub fn nested<T: FromJson>(&self, name: &str) -> Result<T, String> {
        T::from_json(self.required(name)?).map_err(|e| format!("{name}: {e}"))
    }
}

fn as_str(name: &str, v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("field `{name}` must be a string"))
}
