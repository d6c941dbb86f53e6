//! Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), so that SDKs
//! surface them as they would the provider's own.

use serde_json::json;

/// `retry-after` of a `budget_unavailable` answer.
pub const BUDGET_RETRY_AFTER_SECS: u32 = 5;

/// An error the worker answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, …
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
}

impl ApiError {
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
            param: param.map(str::to_string),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: 401,
            message: message.into(),
            kind: "authentication_error",
            code: Some("invalid_api_key"),
            param: None,
        }
    }

    pub fn not_found(path: &str) -> Self {
        ApiError {
            status: 404,
            message: format!("Unknown request URL: {path}. Tollgate serves /v1/chat/completions, /v1/responses, /v1/embeddings, /v1/completions and /v1/models."),
            kind: "invalid_request_error",
            code: Some("unknown_url"),
            param: None,
        }
    }

    /// A known path asked with a method it does not serve.
    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        ApiError {
            status: 405,
            message: format!("{path} does not accept {method}; use {allowed}."),
            kind: "invalid_request_error",
            code: Some("method_not_allowed"),
            param: None,
        }
    }

    /// A browser preflight from an origin `CORS_ALLOWED_ORIGINS` does not list.
    pub fn origin_not_allowed(origin: &str) -> Self {
        ApiError {
            status: 403,
            message: format!("origin {origin} may not call this edge from a browser; an operator adds it to CORS_ALLOWED_ORIGINS"),
            kind: "invalid_request_error",
            code: Some("origin_not_allowed"),
            param: None,
        }
    }

    /// A plain key naming another user in the user header `param` (`attribution::trusted`).
    pub fn end_user_not_allowed(message: String, param: &str) -> Self {
        ApiError {
            status: 403,
            message,
            kind: "permission_error",
            code: Some("end_user_not_allowed"),
            param: Some(param.to_string()),
        }
    }

    pub fn too_large(max: usize) -> Self {
        ApiError {
            status: 413,
            message: format!("request body exceeds {max} bytes"),
            kind: "invalid_request_error",
            code: Some("request_too_large"),
            param: None,
        }
    }

    /// The request body did not arrive in time (a client trickling bytes).
    pub fn body_timeout(after_ms: u64) -> Self {
        ApiError {
            status: 408,
            message: format!("the request body did not arrive within {after_ms} ms"),
            kind: "invalid_request_error",
            code: Some("request_timeout"),
            param: None,
        }
    }

    pub fn upstream_timeout(provider: &str, after_ms: u64) -> Self {
        ApiError {
            status: 504,
            message: format!("the provider `{provider}` did not answer within {after_ms} ms"),
            kind: "api_error",
            code: Some("upstream_timeout"),
            param: None,
        }
    }

    pub fn upstream_unreachable(provider: &str) -> Self {
        ApiError {
            status: 502,
            message: format!("the provider `{provider}` could not be reached"),
            kind: "api_error",
            code: Some("upstream_unreachable"),
            param: None,
        }
    }

    /// A hard budget refused the call (429, like a provider's quota error).
    pub fn budget_exceeded(message: impl Into<String>) -> Self {
        ApiError {
            status: 429,
            message: message.into(),
            kind: "insufficient_quota",
            code: Some("budget_exceeded"),
            param: None,
        }
    }

    /// A hard budget has room left, but not for this call's worst case (429; the message says
    /// what is left, what the call could cost, and how to reserve less).
    pub fn budget_insufficient(message: impl Into<String>) -> Self {
        ApiError {
            status: 429,
            message: message.into(),
            kind: "insufficient_quota",
            code: Some("budget_insufficient_for_worst_case"),
            param: None,
        }
    }

    /// A hard budget could not be checked (its guard, the org's budget list or its recorded
    /// spend could not be had in time), and `BUDGET_FAIL_MODE` is `closed`: 503, retry later.
    pub fn budget_unavailable(budget: &str, why: &str) -> Self {
        ApiError {
            status: 503,
            message: format!(
                "{budget} could not be checked ({why}); the call was not sent. Retry in {} s",
                BUDGET_RETRY_AFTER_SECS
            ),
            kind: "api_error",
            code: Some("budget_unavailable"),
            param: None,
        }
    }

    /// Headers that go with this error (`retry-after` on a 503 the client should retry).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self.code {
            Some("budget_unavailable") => {
                vec![("retry-after", BUDGET_RETRY_AFTER_SECS.to_string())]
            }
            _ => Vec::new(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: message.into(),
            kind: "api_error",
            code: Some("internal_error"),
            param: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let v = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&ApiError::unauthorized("bad key").body()).unwrap();
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["message"], "bad key");
        assert!(v["error"]["param"].is_null());
    }
}
