//! Reading the edge's own JSON documents — config vars, app keys, budgets, the budget guard's
//! requests, answers and ledger — from a parsed [`Value`], field by field.
//!
//! Why not `#[derive(Deserialize)]`: serde generates a deserializer per type, and each carries
//! its own copy of serde_json's parsing and error paths. For these seven types that was 24 KB of
//! the gzipped wasm bundle (measured by removing them). Here every document goes through the one
//! `Value` parser the worker already has, and reading a field is a map lookup. Errors name the
//! field and what was expected. Types are still serialized with serde.

use std::collections::{BTreeMap, BTreeSet};

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

impl FromJson for crate::config::Provider {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        f.only(&["name", "base_url", "secret"])?;
        Ok(crate::config::Provider {
            name: f.str("name")?,
            base_url: f.str("base_url")?,
            secret: f.str("secret")?,
        })
    }
}

impl FromJson for crate::keys::AppKey {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        Ok(crate::keys::AppKey {
            key_id: f.str("key_id")?,
            org_id: f.str("org_id")?,
            user_id: f.str_or_empty("user_id")?,
            app_id: f.str("app_id")?,
            budget_scope: f.str_or_empty("budget_scope")?,
            revoked: f.bool_or_false("revoked")?,
        })
    }
}

impl FromJson for crate::budget::BudgetSpec {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        Ok(crate::budget::BudgetSpec {
            budget_id: f.str("budget_id")?,
            name: f.str("name")?,
            scope: f.str("scope")?,
            user_id: f.str_or_empty("user_id")?,
            app_id: f.str_or_empty("app_id")?,
            period: f.str("period")?,
            limit_nusd: f.i64("limit_nusd")?,
            mode: f.str("mode")?,
            soft_thresholds: f.u8s_or_empty("soft_thresholds")?,
        })
    }
}

impl FromJson for crate::budget::Decision {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        Ok(crate::budget::Decision {
            allowed: f.bool("allowed")?,
            limit_nusd: f.i64("limit_nusd")?,
            spent_nusd: f.i64("spent_nusd")?,
            reserved_nusd: f.i64("reserved_nusd")?,
            reset_at: f.i64("reset_at")?,
            crossed: f.u8s_or_empty("crossed")?,
            spend_unknown: f.bool_or_false("spend_unknown")?,
        })
    }
}

impl FromJson for crate::budget::Ledger {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        let bad_reserved = || "field `reserved` must map ids to [amount, taken_at]".to_string();
        let mut reserved = BTreeMap::new();
        for (id, entry) in f
            .required("reserved")?
            .as_object()
            .ok_or_else(bad_reserved)?
        {
            let pair = match entry.as_array().map(Vec::as_slice) {
                Some([amount, at]) => amount.as_i64().zip(at.as_i64()),
                _ => None,
            };
            reserved.insert(id.clone(), pair.ok_or_else(bad_reserved)?);
        }
        // Inserted one by one: `collect` into a set sorts first, and sort code is heavy in wasm.
        let mut warned = BTreeSet::new();
        for pct in f.u8s_or_empty("warned")? {
            warned.insert(pct);
        }
        Ok(crate::budget::Ledger {
            spec: f.nested("spec")?,
            period_start: f.i64("period_start")?,
            period_end: f.i64("period_end")?,
            spent_nusd: f.i64("spent_nusd")?,
            reserved,
            warned,
            synced_at: f.i64("synced_at")?,
        })
    }
}

impl FromJson for crate::budget::GuardRequest {
    fn from_json(v: &Value) -> Result<Self, String> {
        let f = Fields::of(v)?;
        match f.str("op")?.as_str() {
            "reserve" => Ok(crate::budget::GuardRequest::Reserve {
                spec: f.nested("spec")?,
                id: f.str("id")?,
                amount: f.i64("amount")?,
                now: f.i64("now")?,
            }),
            "settle" => Ok(crate::budget::GuardRequest::Settle {
                id: f.str("id")?,
                actual: f.i64("actual")?,
                now: f.i64("now")?,
            }),
            other => Err(format!("unknown op `{other}` (expected reserve or settle)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BudgetSpec, Decision, GuardRequest, Ledger};
    use crate::config::Provider;
    use crate::keys::AppKey;

    fn spec() -> BudgetSpec {
        BudgetSpec {
            budget_id: "b1".into(),
            name: "Team \"A\"".into(),
            scope: "org_user".into(),
            user_id: "u1".into(),
            app_id: String::new(),
            period: "monthly".into(),
            limit_nusd: 5_000_000_000,
            mode: "hard".into(),
            soft_thresholds: vec![50, 80],
        }
    }

    /// What serde writes reads back the same: the worker serializes these for the guard, the
    /// guard for its storage and answers.
    #[test]
    fn serialized_documents_read_back_equal() {
        let mut ledger = Ledger::new(spec(), 1_764_288_000);
        ledger.reserve("call-1", 1_000, 1_764_288_001);
        ledger.warned.insert(50);
        ledger.synced_at = 1_764_288_002;
        let text = serde_json::to_string(&ledger).unwrap();
        assert_eq!(parse::<Ledger>(text.as_bytes()).unwrap(), ledger);

        let decision = Decision {
            allowed: false,
            limit_nusd: 10,
            spent_nusd: 7,
            reserved_nusd: 3,
            reset_at: 1_764_547_200,
            crossed: vec![80],
            spend_unknown: true,
        };
        let text = serde_json::to_string(&decision).unwrap();
        assert_eq!(parse::<Decision>(text.as_bytes()).unwrap(), decision);
    }

    #[test]
    fn guard_requests_read_back_by_op() {
        for cmd in [
            GuardRequest::Reserve {
                spec: spec(),
                id: "e1".into(),
                amount: 42,
                now: 7,
            },
            GuardRequest::Settle {
                id: "e1".into(),
                actual: 40,
                now: 8,
            },
        ] {
            let text = serde_json::to_string(&cmd).unwrap();
            let back = parse::<GuardRequest>(text.as_bytes()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{cmd:?}"));
        }
        let err = parse::<GuardRequest>(br#"{"op":"refund","id":"e1"}"#).unwrap_err();
        assert_eq!(err, "unknown op `refund` (expected reserve or settle)");
        let err = parse::<GuardRequest>(br#"{"op":"settle","id":"e1","now":1}"#).unwrap_err();
        assert_eq!(err, "missing field `actual`");
    }

    /// Budgets and keys as dashboard-api writes them: optional fields may be missing.
    #[test]
    fn optional_fields_default_and_required_ones_are_named() {
        let minimal = br#"{"budget_id":"b","name":"n","scope":"org","period":"daily","limit_nusd":1,"mode":"soft"}"#;
        let b = parse::<BudgetSpec>(minimal).unwrap();
        assert_eq!((b.user_id.as_str(), b.soft_thresholds.len()), ("", 0));
        let with_nulls = br#"{"budget_id":"b","name":"n","scope":"org","user_id":null,"period":"daily","limit_nusd":1,"mode":"soft","soft_thresholds":null}"#;
        assert_eq!(parse::<BudgetSpec>(with_nulls).unwrap(), b);

        let key =
            parse::<AppKey>(br#"{"key_id":"k","org_id":"o","app_id":"a","extra":1}"#).unwrap();
        assert_eq!((key.user_id.as_str(), key.revoked), ("", false));
        assert!(
            parse::<AppKey>(br#"{"key_id":"k","org_id":"o","app_id":"a","revoked":true}"#)
                .unwrap()
                .revoked
        );

        for (doc, why) in [
            (
                &br#"{"key_id":"k","app_id":"a"}"#[..],
                "missing field `org_id`",
            ),
            (
                br#"{"key_id":"k","org_id":7,"app_id":"a"}"#,
                "field `org_id` must be a string",
            ),
            (
                br#"{"key_id":"k","org_id":"o","app_id":"a","revoked":"yes"}"#,
                "field `revoked` must be true or false",
            ),
            (
                br#"{"key_id":"k","org_id":"o","app_id":"a","revoked":null}"#,
                "field `revoked` must be true or false",
            ),
            (br#"[1]"#, "expected a JSON object"),
            (br#"{"#, "not JSON"),
        ] {
            let err = parse::<AppKey>(doc).unwrap_err();
            assert!(err.starts_with(why), "{err}");
        }
        let err = parse::<BudgetSpec>(br#"{"budget_id":"b","name":"n","scope":"org","period":"daily","limit_nusd":1.5,"mode":"soft"}"#).unwrap_err();
        assert_eq!(err, "field `limit_nusd` must be a whole number (64-bit)");
        let err = parse::<BudgetSpec>(br#"{"budget_id":"b","name":"n","scope":"org","period":"daily","limit_nusd":1,"mode":"soft","soft_thresholds":[50,300]}"#).unwrap_err();
        assert_eq!(
            err,
            "field `soft_thresholds` must be a list of integers 0-255"
        );
    }

    #[test]
    fn ledgers_with_bad_reservations_and_lists_name_the_index() {
        let mut v = serde_json::to_value(Ledger::new(spec(), 0)).unwrap();
        v["reserved"] = serde_json::json!({"c": [1]});
        assert!(Ledger::from_json(&v).unwrap_err().contains("reserved"));
        v["reserved"] = serde_json::json!({});
        v["spec"]["mode"] = Value::Null;
        assert_eq!(
            Ledger::from_json(&v).unwrap_err(),
            "spec: missing field `mode`"
        );

        let specs = serde_json::json!([serde_json::to_value(spec()).unwrap(), {"name": "x"}]);
        let err = list::<BudgetSpec>(&specs, "budgets").unwrap_err();
        assert_eq!(err, "budgets[1]: missing field `budget_id`");
        let err = list::<BudgetSpec>(&serde_json::json!({}), "budgets").unwrap_err();
        assert_eq!(err, "budgets: expected a JSON array");
    }

    #[test]
    fn providers_refuse_unknown_fields() {
        let p = parse::<Provider>(br#"{"name":"x","base_url":"https://x/v1","secret":"X_KEY"}"#)
            .unwrap();
        assert_eq!(p.secret, "X_KEY");
        let err = parse::<Provider>(
            br#"{"name":"x","base_url":"https://x/v1","secret":"X","sekret":"Y"}"#,
        )
        .unwrap_err();
        assert!(err.starts_with("unknown field `sekret`"), "{err}");
    }
}
