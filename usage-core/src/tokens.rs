//! What a call consumed, by class: its tokens (with the record's subset rules) and the priced
//! tool calls it made. Read from provider payloads by [`crate::usage`] and [`crate::sse`],
//! priced by [`crate::cost`].

use crate::record::UsageRecord;

/// Token counts of one call, by class (the record's contract on subsets applies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: u32,
    pub output: u32,
    pub cached_input: u32,
    pub cache_write: u32,
    pub reasoning: u32,
    /// Parts of `input`.
    pub audio_input: u32,
    pub image_input: u32,
    /// Parts of `output`.
    pub audio_output: u32,
    pub image_output: u32,
}

/// Priced tool calls a call made (not the tools it declared).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ToolCalls {
    pub web_search: u32,
    pub file_search: u32,
}

impl TokenCounts {
    pub fn of(record: &UsageRecord) -> TokenCounts {
        TokenCounts {
            input: record.input_tokens,
            output: record.output_tokens,
            cached_input: record.cached_input_tokens,
            cache_write: record.cache_write_tokens,
            reasoning: record.reasoning_tokens,
            audio_input: record.audio_input_tokens,
            image_input: record.image_input_tokens,
            audio_output: record.audio_output_tokens,
            image_output: record.image_output_tokens,
        }
    }

    /// No token of any class.
    pub fn is_zero(&self) -> bool {
        *self == TokenCounts::default()
    }

    /// The same counts with every part clamped to what is left of its whole, in the order
    /// the module docs price them.
    pub fn clamped(self) -> TokenCounts {
        let mut left = self.input;
        let mut take = |n: u32| {
            let n = n.min(left);
            left -= n;
            n
        };
        let (cached_input, cache_write, audio_input, image_input) = (
            take(self.cached_input),
            take(self.cache_write),
            take(self.audio_input),
            take(self.image_input),
        );
        let mut left = self.output;
        let mut take = |n: u32| {
            let n = n.min(left);
            left -= n;
            n
        };
        let (reasoning, audio_output, image_output) = (
            take(self.reasoning),
            take(self.audio_output),
            take(self.image_output),
        );
        TokenCounts {
            input: self.input,
            output: self.output,
            cached_input,
            cache_write,
            reasoning,
            audio_input,
            image_input,
            audio_output,
            image_output,
        }
    }
}

impl ToolCalls {
    pub fn of(record: &UsageRecord) -> ToolCalls {
        ToolCalls {
            web_search: record.web_search_calls,
            file_search: record.file_search_calls,
        }
    }
}
