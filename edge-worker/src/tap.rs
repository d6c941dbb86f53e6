//! The stream tap: sees every byte of a streamed response on its way to the client, measures
//! it with `usage-core`'s SSE scanner, and — only when the worker itself asked the provider for
//! usage — removes the usage-only chunk so the client receives exactly what it asked for.
//!
//! Without stripping, bytes are forwarded the moment they arrive. With stripping, chunks of whole events
//! without a usage object pass as they came; otherwise bytes are held only until the end of the
//! current event (`\n\n`), which providers send whole.

use usage_core::{SseScanner, StreamSummary};

/// What the client gets for one upstream chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward {
    /// The chunk as it came (the glue passes the runtime's own buffer on, uncopied).
    Unchanged,
    /// These bytes (possibly none: an event is held until it is complete).
    Bytes(Vec<u8>),
}

impl Forward {
    /// The bytes to send for `chunk`.
    pub fn into_bytes(self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Forward::Unchanged => chunk.to_vec(),
            Forward::Bytes(b) => b,
        }
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct StreamTap {
    scanner: SseScanner,
    strip_usage_chunk: bool,
    /// Bytes of the event in progress (only when stripping).
    pending: Vec<u8>,
    bytes_in: u64,
    bytes_out: u64,
}

impl StreamTap {
    pub fn new(strip_usage_chunk: bool) -> Self {
        StreamTap {
            strip_usage_chunk,
            ..Default::default()
        }
    }

    /// Takes the next upstream chunk; says what to send the client now.
    pub fn push(&mut self, chunk: &[u8]) -> Forward {
        self.scanner.feed(chunk);
        self.bytes_in += chunk.len() as u64;
        if !self.strip_usage_chunk {
            self.bytes_out += chunk.len() as u64;
            return Forward::Unchanged;
        }
        // Whole events without a usage object (nearly every chunk of a stream): nothing to
        // strip, so they go as they came — no copy out of wasm, no new buffer for the runtime.
        if self.pending.is_empty()
            && ends_an_event(chunk)
            && !usage_core::sse::has_usage_object(chunk)
        {
            self.bytes_out += chunk.len() as u64;
            return Forward::Unchanged;
        }
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        while let Some(end) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + end];
            if !is_usage_only_chunk(event) {
                out.extend_from_slice(event);
            }
            start += end;
        }
        self.pending.drain(..start);
        self.bytes_out += out.len() as u64;
        Forward::Bytes(out)
    }

    /// The provider's stream ended: the bytes still held (an unterminated last event), to send.
    pub fn end(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        let rest = if self.strip_usage_chunk && is_usage_only_chunk(&rest) {
            Vec::new()
        } else {
            rest
        };
        self.bytes_out += rest.len() as u64;
        rest
    }

    /// Ends the stream: the bytes still held (see [`StreamTap::end`]) and the summary.
    pub fn finish(mut self) -> (Vec<u8>, StreamTotals) {
        let rest = self.end();
        let totals = StreamTotals {
            summary: self.scanner.finish(),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        };
        (rest, totals)
    }
}

/// What a tapped stream amounted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTotals {
    pub summary: StreamSummary,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Whether `chunk` ends where an event ends (its blank line), as [`event_end`] finds them.
fn ends_an_event(chunk: &[u8]) -> bool {
    chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\n\r\n")
}

/// Length of the first complete event in `buf` including its blank line, if there is one.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        match &buf[i..] {
            [b'\n', b'\n', ..] => return Some(i + 2),
            [b'\r', b'\n', b'\r', b'\n', ..] => return Some(i + 4),
            _ => i += 1,
        }
    }
    None
}

/// A Chat Completions chunk with empty `choices` and a `usage`: the chunk
/// `stream_options.include_usage` adds.
fn is_usage_only_chunk(event: &[u8]) -> bool {
    // Most events say `"usage":null` (or nothing): decided before any copy or parse.
    if !usage_core::sse::has_usage_object(event) {
        return false;
    }
    let text = match std::str::from_utf8(event) {
        Ok(t) => t,
        Err(_) => return false,
    };
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n");
    match serde_json::from_slice::<serde_json::Value>(data.as_bytes()) {
        Ok(v) => {
            v.get("choices")
                .and_then(|c| c.as_array())
                .is_some_and(Vec::is_empty)
                && v.get("usage").is_some_and(|u| u.is_object())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1}}\n\n\
data: [DONE]\n\n";

    fn run(strip: bool, chunk: usize) -> (Vec<u8>, StreamTotals) {
        let mut tap = StreamTap::new(strip);
        let mut out = Vec::new();
        for c in STREAM.chunks(chunk) {
            out.extend(tap.push(c).into_bytes(c));
        }
        let (rest, totals) = tap.finish();
        out.extend(rest);
        (out, totals)
    }

    #[test]
    fn passes_everything_when_the_client_asked_for_usage() {
        for chunk in [1, 7, 1000] {
            let (out, totals) = run(false, chunk);
            assert_eq!(out, STREAM);
            assert_eq!(totals.summary.usage.unwrap().tokens.input, 7);
        }
    }

    #[test]
    fn strips_only_the_injected_usage_chunk_however_it_is_split() {
        let expected: Vec<u8> = b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n".to_vec();
        for chunk in 1..STREAM.len() {
            let (out, totals) = run(true, chunk);
            assert_eq!(out, expected, "chunk size {chunk}");
            let s = totals.summary;
            assert_eq!(
                s.usage.unwrap().tokens.input,
                7,
                "the tap still measured it"
            );
            assert!(s.done);
            assert_eq!(totals.bytes_out, expected.len() as u64);
            assert_eq!(totals.bytes_in, STREAM.len() as u64);
        }
    }

    #[test]
    fn when_stripping_whole_events_without_usage_pass_unchanged() {
        let mut tap = StreamTap::new(true);
        let content = b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
        assert_eq!(tap.push(content), Forward::Unchanged);
        // Half an event is held, and sent (copied) once complete.
        assert_eq!(tap.push(&content[..10]), Forward::Bytes(Vec::new()));
        assert_eq!(tap.push(&content[10..]), Forward::Bytes(content.to_vec()));
        // The usage chunk, whole, is still stripped.
        let usage = b"data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1}}\n\n";
        assert_eq!(tap.push(usage), Forward::Bytes(Vec::new()));
        assert_eq!(tap.push(b"data: [DONE]\n\n"), Forward::Unchanged);
        let (rest, totals) = tap.finish();
        assert!(rest.is_empty());
        assert_eq!(totals.bytes_out, (2 * content.len() + 14) as u64);
        assert_eq!(totals.summary.usage.map(|u| u.tokens.input), Some(7));
    }

    #[test]
    fn without_stripping_chunks_pass_unchanged_and_are_still_measured() {
        let mut tap = StreamTap::new(false);
        let chunk = b"data: {\"model\":\"m\",\"choices\":[{}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";
        assert_eq!(tap.push(chunk), Forward::Unchanged);
        assert_eq!(tap.push(b"data: [DONE]\n\n"), Forward::Unchanged);
        let (rest, totals) = tap.finish();
        assert!(rest.is_empty());
        assert_eq!(totals.bytes_out, (chunk.len() + 14) as u64);
        assert_eq!(totals.summary.usage.map(|u| u.tokens.input), Some(3));
    }

    #[test]
    fn only_events_with_a_usage_object_are_parsed_as_usage_chunks() {
        assert!(is_usage_only_chunk(
            b"data: {\"choices\": [], \"usage\" : {\"total_tokens\": 3}}\n\n"
        ));
        assert!(!is_usage_only_chunk(
            b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n"
        ));
    }

    #[test]
    fn a_cut_stream_forwards_its_partial_tail() {
        let mut tap = StreamTap::new(true);
        let chunk = b"data: {\"model\":\"m\",\"choices\":[{}]}\n\ndata: {\"mod";
        let first = tap.push(chunk).into_bytes(chunk);
        assert!(first.ends_with(b"\n\n"));
        let (rest, totals) = tap.finish();
        assert_eq!(rest, b"data: {\"mod");
        assert!(totals.summary.truncated);
    }
}
