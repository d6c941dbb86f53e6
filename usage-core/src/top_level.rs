//! A JSON object's top-level fields, each kept as its raw text until asked for.
//!
//! Provider payloads and request bodies are read this way rather than through
//! `#[derive(Deserialize)]` structs: the fields nobody needs (messages, completion text,
//! embedding vectors) are scanned, never built into a tree, and the few that matter are parsed
//! as a [`Value`] on demand. One reader for every document also keeps serde's per-type
//! deserializers — tens of kilobytes — out of the edge worker's wasm.
//!
//! Keeping a field raw checks that its text is UTF-8, as JSON requires: a document with a stray
//! invalid byte anywhere is refused whole (a request body gets a 400; a provider answer yields
//! no usage).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// The fields in document order, each as (name, raw JSON text). A plain list: documents have
/// a handful of top-level fields, and a map type would bring its own code into the wasm.
#[derive(Debug, Default)]
pub struct TopLevel<'a>(pub Vec<(String, &'a RawValue)>);

impl<'a> TopLevel<'a> {
    /// The raw text of field `name` (its last occurrence, if repeated).
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TopLevel<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(TopLevel(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// The top-level fields of the JSON object `bytes`.
pub fn read(bytes: &[u8]) -> Result<TopLevel<'_>, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Field `name` as a [`Value`] when present, `null` included.
pub fn value(top: &TopLevel<'_>, name: &str) -> Option<Value> {
    // (`from_slice`, as every reader of the edge uses: one parser instance in the wasm.)
    serde_json::from_slice(top.get(name)?.get().as_bytes()).ok()
}

/// Field `name` when present and not `null`.
pub fn field(top: &TopLevel<'_>, name: &str) -> Option<Value> {
    value(top, name).filter(|v| !v.is_null())
}

/// Whether field `name` is `[]` (told from its raw text, without building it).
pub fn is_empty_array(top: &TopLevel<'_>, name: &str) -> bool {
    top.get(name).is_some_and(|raw| {
        raw.get()
            .strip_prefix('[')
            .is_some_and(|rest| rest.trim_start() == "]")
    })
}

/// Field `name` when it is a string.
pub fn text(top: &TopLevel<'_>, name: &str) -> Option<String> {
    match field(top, name)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_raw_until_asked_and_null_is_told_from_absent() {
        let body = br#"{"model":"m","stream":null,"messages":[{"content":"\"model\": \"x\""}],"n":1,"n":2}"#;
        let top = read(body).unwrap();
        assert_eq!(text(&top, "model").as_deref(), Some("m"));
        assert_eq!(value(&top, "stream"), Some(Value::Null));
        assert_eq!(field(&top, "stream"), None);
        assert_eq!(value(&top, "absent"), None);
        assert_eq!(
            field(&top, "n"),
            Some(Value::from(2)),
            "the last occurrence wins"
        );
        assert_eq!(text(&top, "n"), None, "not a string");
        assert!(top.get("messages").unwrap().get().starts_with("[{"));
        assert!(read(b"[1]").is_err());
        let top = read(br#"{"a":[],"b":[ ],"c":[1],"d":{}}"#).unwrap();
        assert!(is_empty_array(&top, "a") && is_empty_array(&top, "b"));
        assert!(
            !is_empty_array(&top, "c") && !is_empty_array(&top, "d") && !is_empty_array(&top, "e")
        );
        assert!(read(b"{\"a\":").is_err());
    }
}
