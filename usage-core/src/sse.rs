//! An incremental scanner for provider event streams (server-sent events).
//!
//! [`SseScanner`] is fed the bytes of a streamed response exactly as they arrive — split
//! anywhere: inside a line, inside a UTF-8 sequence, inside `data:` — and keeps only what it
//! needs: the current partial line and the current event's data. At the end,
//! [`SseScanner::finish`] yields a [`StreamSummary`]: the final usage (the last usage seen
//! wins), the served model, whether the stream ended properly (`[DONE]` for Chat Completions, a
//! terminal `response.*` event for the Responses API) and whether it was cut short.
//!
//! Both Chat Completions chunks (`{"model":…,"choices":[…],"usage":…}`) and Responses API
//! events (`{"type":"response.completed","response":{"model":…,"usage":…}}`) are understood;
//! comment lines (`: OPENROUTER PROCESSING`) are skipped. Chunks that cannot carry anything we
//! need are not parsed at all, so the cost per chunk is a substring check.

use serde_json::Value;

use crate::tokens::ToolCalls;
use crate::top_level::{self, field, text as text_field};
use crate::usage::{count_search_calls, ParsedUsage, WireUsage};

/// Estimated input tokens of a request body: about four bytes per token of JSON text.
pub fn estimate_input_tokens(request_bytes: u64) -> u32 {
    u32::try_from(request_bytes / 4).unwrap_or(u32::MAX)
}

/// Longest event data the scanner buffers; a longer event is skipped (and counted).
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// What a finished (or abandoned) stream said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// The final usage the provider reported; `None` if it never came.
    pub usage: Option<ParsedUsage>,
    /// The model that served the stream.
    pub model: Option<String>,
    /// The provider's id for the call.
    pub id: Option<String>,
    /// The stream ended as the protocol says it should.
    pub done: bool,
    /// The stream stopped before its end (no `[DONE]` / terminal event, or a partial event).
    pub truncated: bool,
    /// Data events seen, excluding `[DONE]`.
    pub events: u64,
    /// Events that carried content (neither usage-only nor `[DONE]`): about one output token
    /// each, which makes an estimate when a cut stream never reports its usage.
    pub content_events: u64,
    /// An error the provider sent inside the stream (its `message`, or its type).
    pub error: Option<String>,
    /// Events skipped for exceeding [`MAX_EVENT_BYTES`].
    pub oversized_events: u64,
    /// The tier the provider says it served the stream in (the last `service_tier` seen).
    pub service_tier: Option<String>,
}

impl StreamSummary {
    /// Output tokens estimated from the events seen, for streams that lost their usage.
    pub fn estimated_output_tokens(&self) -> u32 {
        u32::try_from(self.content_events).unwrap_or(u32::MAX)
    }

    /// Tollgate's estimate of a stream that never reported its usage: the request's input
    /// ([`estimate_input_tokens`]) and one output token per content event.
    pub fn estimate(&self, request_bytes: u64) -> crate::tokens::TokenCounts {
        crate::tokens::TokenCounts {
            input: estimate_input_tokens(request_bytes),
            output: self.estimated_output_tokens(),
            ..Default::default()
        }
    }
}

/// Incremental SSE scanner; see the module docs.
#[derive(Debug, Default)]
pub struct SseScanner {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last byte fed was `\r`: a following `\n` belongs to the same line ending.
    after_cr: bool,
    /// The current event overflowed; skip until the blank line that ends it.
    overflow: bool,
    /// Bytes of the current line were dropped (so an empty `line` is not a blank line).
    line_dropped: bool,
    /// Search calls in `response.output_item.done` events (Responses API), for a stream cut
    /// before its terminal event; the terminal event's `output` replaces them.
    search_calls: ToolCalls,
    /// The terminal event listed the response's output (its count is final).
    output_listed: bool,
    summary: StreamSummary,
}

impl SseScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        // An empty chunk says nothing; in particular it must not forget a pending `\r`
        // (found by the `sse_scanner` fuzz target: fuzz/regressions/sse_scanner/).
        if chunk.is_empty() {
            return;
        }
        if self.after_cr {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
            self.after_cr = false;
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = chunk.split_at(pos);
            self.push_line_bytes(head);
            self.end_line();
            let mut rest = &tail[1..];
            if tail[0] == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            chunk = rest;
        }
        self.push_line_bytes(chunk);
    }

    /// What the stream said so far, without ending it.
    pub fn summary(&self) -> &StreamSummary {
        &self.summary
    }

    /// Ends the stream: a pending event is dispatched as the stream's last, and the stream is
    /// marked truncated unless it ended properly.
    pub fn finish(mut self) -> StreamSummary {
        if !self.line.is_empty() || self.line_dropped {
            self.end_line();
        }
        if self.overflow {
            self.summary.oversized_events += 1;
        } else if self.has_data {
            self.dispatch();
        }
        self.summary.truncated = !self.summary.done;
        if let Some(u) = self.summary.usage.as_mut() {
            u.tools.web_search = u.tools.web_search.max(self.search_calls.web_search);
            u.tools.file_search = u.tools.file_search.max(self.search_calls.file_search);
        }
        self.summary
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.overflow || self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            self.overflow = true;
            self.line_dropped = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let dropped = std::mem::take(&mut self.line_dropped);
        if line.is_empty() && !dropped {
            if self.overflow {
                self.summary.oversized_events += 1;
                self.overflow = false;
                self.data.clear();
                self.has_data = false;
            } else if self.has_data {
                self.dispatch();
            }
        } else if !self.overflow {
            self.field(&line);
        }
        self.line = line;
        self.line.clear();
    }

    fn field(&mut self, line: &[u8]) {
        if line[0] == b':' {
            return; // comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if name == b"data" {
            if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                self.overflow = true;
                return;
            }
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        // `event:`, `id:` and `retry:` carry nothing we need: the JSON has its own `type`.
    }

    fn dispatch(&mut self) {
        let data = std::mem::take(&mut self.data);
        self.has_data = false;
        self.scan_event(&data);
        self.data = data;
        self.data.clear();
    }

    fn scan_event(&mut self, data: &[u8]) {
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.summary.done = true;
            return;
        }
        self.summary.events += 1;
        let worth_parsing = self.summary.model.is_none()
            || has_usage_object(data)
            || contains(data, b"_search_call\"")
            || contains(data, b"\"error\"")
            || contains(data, b"\"response.");
        if !worth_parsing {
            self.summary.content_events += 1;
            return;
        }
        let Ok(event) = top_level::read(data) else {
            // Not a JSON object: nothing we can use, but not a reason to lose the rest of the
            // stream.
            return;
        };
        let mut usage = field(&event, "usage");
        let mut model = text_field(&event, "model");
        let mut id = text_field(&event, "id");
        let mut is_content = true;
        let mut tier = text_field(&event, "service_tier");
        if let Some(kind) = text_field(&event, "type") {
            // Its own fields only: `response.completed` carries the whole output text, and
            // `instructions` and `tools` ride along on every `response.*` event.
            let response = event
                .get("response")
                .and_then(|raw| top_level::read(raw.get().as_bytes()).ok());
            if let Some(response) = response {
                model = model.or_else(|| text_field(&response, "model"));
                id = id.or_else(|| text_field(&response, "id"));
                usage = usage.or_else(|| field(&response, "usage"));
                tier = tier.or_else(|| text_field(&response, "service_tier"));
                // The output is built only when its text names a search call.
                let terminal = matches!(
                    kind.as_str(),
                    "response.completed" | "response.incomplete" | "response.failed"
                );
                if let Some(raw) = response.get("output").filter(|_| terminal) {
                    let listed = if raw.get().contains("_search_call\"") {
                        count_search_calls(field(&response, "output").as_ref())
                    } else {
                        ToolCalls::default()
                    };
                    self.search_calls = listed;
                    self.output_listed = true;
                }
                if let Some(e) = field(&response, "error").as_ref().and_then(error_text) {
                    self.summary.error = Some(e);
                }
            }
            let kind = kind.as_str();
            match kind {
                "response.completed" | "response.incomplete" | "response.failed" => {
                    self.summary.done = true;
                    is_content = false;
                }
                "response.output_text.delta" => {}
                "response.output_item.done" if !self.output_listed => {
                    let item = field(&event, "item");
                    let one = count_search_calls(Some(&Value::Array(item.into_iter().collect())));
                    self.search_calls.web_search += one.web_search;
                    self.search_calls.file_search += one.file_search;
                    is_content = false;
                }
                "error" => {
                    self.summary.error =
                        Some(text_field(&event, "message").unwrap_or_else(|| "error".to_string()));
                    is_content = false;
                }
                _ => is_content = false,
            }
        }
        if let Some(e) = field(&event, "error").as_ref().and_then(error_text) {
            self.summary.error = Some(e);
            is_content = false;
        }
        if self.summary.model.is_none() {
            self.summary.model = model.filter(|m| !m.is_empty());
        }
        if self.summary.id.is_none() {
            self.summary.id = id;
        }
        if let Some(t) = tier.filter(|t| !t.is_empty()) {
            self.summary.service_tier = Some(t);
        }
        if let Some(u) = usage.as_ref().and_then(WireUsage::from_value) {
            self.summary.usage = Some(u.normalise());
            // The usage-only chunk of Chat Completions has empty `choices`.
            if top_level::is_empty_array(&event, "choices") {
                is_content = false;
            }
        }
        if is_content {
            self.summary.content_events += 1;
        }
    }
}

/// Scans a whole stream at once (a convenience over [`SseScanner`]).
pub fn scan(bytes: &[u8]) -> StreamSummary {
    let mut s = SseScanner::new();
    s.feed(bytes);
    s.finish()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether a `"usage"` key in the JSON text `data` is followed by an object: a cheap test that
/// spares parsing the `"usage":null` that most chunks of a stream with usage carry.
pub fn has_usage_object(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    let mut from = 0;
    while let Some(at) = find(&data[from..], KEY) {
        from += at + KEY.len();
        let value = data[from..]
            .trim_ascii_start()
            .strip_prefix(b":")
            .map(<[u8]>::trim_ascii_start);
        if value.is_some_and(|v| v.starts_with(b"{")) {
            return true;
        }
    }
    false
}

/// An error a stream reported, as text: an object's `message`, else its `type`, else its
/// `code` (as JSON), else "error"; a string as it is; anything else is no error.
fn error_text(error: &Value) -> Option<String> {
    match error {
        Value::Object(o) => {
            let text = |name: &str| o.get(name).and_then(Value::as_str).map(str::to_string);
            text("message")
                .or_else(|| text("type"))
                .or_else(|| o.get("code").filter(|c| !c.is_null()).map(Value::to_string))
                .or_else(|| Some("error".to_string()))
        }
        Value::String(t) => Some(t.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_usage_object_counts_as_usage() {
        assert!(has_usage_object(
            br#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(has_usage_object(
            br#"{"choices": [], "usage" : { "prompt_tokens": 1 }}"#
        ));
        assert!(has_usage_object(
            br#"{"usage":null,"response":{"usage":{"input_tokens":2}}}"#
        ));
        assert!(!has_usage_object(br#"{"choices":[{}],"usage":null}"#));
        assert!(!has_usage_object(br#"{"text":"\"usage\": {is a word"}"#));
        assert!(!has_usage_object(br#"{"usage""#));
    }

    #[test]
    fn line_endings_of_every_kind() {
        for sep in ["\n", "\r\n", "\r"] {
            let body = format!(
                "data: {{\"model\":\"m\",\"choices\":[{{}}]}}{sep}{sep}data: [DONE]{sep}{sep}"
            );
            let s = scan(body.as_bytes());
            assert_eq!(s.model.as_deref(), Some("m"), "sep {sep:?}");
            assert!(s.done && !s.truncated, "sep {sep:?}");
        }
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_ending() {
        let mut s = SseScanner::new();
        s.feed(b"data: {\"model\":\"m\"}\r");
        s.feed(b"\n\r");
        s.feed(b"\ndata: [DONE]\r\n\r\n");
        let s = s.finish();
        assert_eq!((s.events, s.done), (1, true));
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_changes_nothing() {
        let body = b"data: {\"model\":\r\ndata: \"x\"}\r\n\r\ndata: [DONE]\r\n\r\n";
        let cr = body.iter().position(|&b| b == b'\r').unwrap();
        let mut s = SseScanner::new();
        s.feed(&body[..=cr]);
        s.feed(b"");
        s.feed(&body[cr + 1..]);
        assert_eq!(s.finish(), scan(body));
        assert_eq!(scan(body).model.as_deref(), Some("x"));
    }

    #[test]
    fn multi_line_data_and_comments() {
        let s =
            scan(b": OPENROUTER PROCESSING\n\ndata: {\"model\":\ndata: \"x\"}\n\ndata: [DONE]\n\n");
        assert_eq!(s.model.as_deref(), Some("x"));
        assert_eq!(s.events, 1);
    }

    #[test]
    fn error_events_are_reported() {
        let s = scan(b"data: {\"error\":{\"message\":\"overloaded\",\"code\":529}}\n\n");
        assert_eq!(s.error.as_deref(), Some("overloaded"));
        assert!(s.truncated);
    }

    #[test]
    fn oversized_events_are_skipped_not_buffered() {
        let mut s = SseScanner::new();
        s.feed(b"data: ");
        let big = vec![b'a'; 1 << 20];
        for _ in 0..5 {
            s.feed(&big);
        }
        s.feed(b"\n\ndata: {\"model\":\"m\"}\n\ndata: [DONE]\n\n");
        assert!(s.line.capacity() <= MAX_EVENT_BYTES + (1 << 20));
        let s = s.finish();
        assert_eq!(
            (s.oversized_events, s.model.as_deref(), s.done),
            (1, Some("m"), true)
        );
    }

    #[test]
    fn an_unterminated_last_event_still_counts_but_is_truncated() {
        let s = scan(
            b"data: {\"model\":\"m\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}",
        );
        assert_eq!(s.usage.map(|u| u.tokens.input), Some(3));
        assert!(s.truncated);
    }
}
