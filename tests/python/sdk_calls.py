"""Drives Tollgate's edge worker with the official OpenAI Python SDK, one scenario per call.

Each call carries `x-tollgate-task: <scenario>` so the test can find its usage record. Prints a
JSON object: scenario -> what the SDK received (or the error it raised). Environment:
TOLLGATE_BASE_URL, TOLLGATE_KEY.
"""
import json
import os

import openai

BASE = os.environ["TOLLGATE_BASE_URL"]
KEY = os.environ["TOLLGATE_KEY"]
out = {}


def client(task, **headers):
    h = {"x-tollgate-task": task, **headers}
    return openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=30, default_headers=h)


def error_of(e):
    return {"status": getattr(e, "status_code", None), "type": type(e).__name__, "body": getattr(e, "body", None)}


# 1. Chat, not streamed, with cached and reasoning tokens.
r = client("chat_plain", **{"x-tollgate-user": "alice", "x-tollgate-tags": "env=e2e,team=qa"}).chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "hello"}],
    extra_body={"mock": {"usage": {"prompt_tokens": 2000, "completion_tokens": 300, "cached_tokens": 1500, "reasoning_tokens": 100}}},
)
out["chat_plain"] = r.model_dump()

# 2. Chat streamed; the client did not ask for usage (the worker does, then hides it).
chunks = [c.model_dump() for c in client("chat_stream").chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
    extra_body={"mock": {"chunks": 5, "usage": {"prompt_tokens": 40, "completion_tokens": 5}}})]
out["chat_stream"] = chunks

# 3. Chat streamed with include_usage: the client gets the usage chunk itself.
chunks = [c.model_dump() for c in client("chat_stream_usage").chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
    stream_options={"include_usage": True},
    extra_body={"mock": {"chunks": 4, "usage": {"prompt_tokens": 50, "completion_tokens": 4, "cached_tokens": 10}}})]
out["chat_stream_usage"] = chunks

# 4. Responses API, plain and streamed.
r = client("responses_plain").responses.create(model="gpt-4.1", input="hello",
    extra_body={"mock": {"usage": {"prompt_tokens": 328, "completion_tokens": 52, "cached_tokens": 128}}})
out["responses_plain"] = {"output_text": r.output_text, "usage": r.usage.model_dump(), "model": r.model}
events = [e.type for e in client("responses_stream").responses.create(model="gpt-4.1", input="hello", stream=True,
    extra_body={"mock": {"chunks": 3, "usage": {"prompt_tokens": 37, "completion_tokens": 411, "reasoning_tokens": 384}}})]
out["responses_stream"] = events

# 5. Embeddings.
r = client("embeddings").embeddings.create(model="text-embedding-3-small", input=["a", "b"],
    extra_body={"mock": {"usage": {"prompt_tokens": 8123}}})
out["embeddings"] = {"n": len(r.data), "usage": r.usage.model_dump(), "dims": len(r.data[0].embedding)}

# 6. OpenRouter through the model prefix, with its reported cost and cache writes.
r = client("openrouter").chat.completions.create(
    model="openrouter/anthropic/claude-sonnet-4.5", messages=[{"role": "user", "content": "hi"}],
    extra_body={"mock": {"usage": {"prompt_tokens": 12450, "completion_tokens": 420, "cached_tokens": 11000,
                                   "cache_write_tokens": 1200, "cost": 0.0149835}}})
out["openrouter"] = r.model_dump()

# 7. A model missing from the price table.
r = client("unpriced").chat.completions.create(model="gpt-9-experimental", messages=[{"role": "user", "content": "hi"}])
out["unpriced"] = r.model_dump()

# 8. A bad key.
try:
    openai.OpenAI(base_url=BASE, api_key="tg_" + "x" * 40, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    out["bad_key"] = "no error"
except openai.APIStatusError as e:
    out["bad_key"] = error_of(e)

# 9. The provider fails: passed through unchanged.
try:
    client("provider_500").chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        extra_body={"mock": {"status": 500}})
    out["provider_500"] = "no error"
except openai.APIStatusError as e:
    out["provider_500"] = error_of(e)

# 10. The client walks away mid-stream.
stream = client("client_abort").chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "tell me a long story"}], stream=True,
    extra_body={"mock": {"chunks": 40, "chunk_delay_ms": 100}})
got = []
for c in stream:
    got.append(c.model_dump())
    if len(got) == 2:
        break
stream.close()
out["client_abort"] = len(got)

# 11. The provider does not answer in time: 504 in OpenAI's shape.
try:
    client("upstream_timeout").chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        extra_body={"mock": {"delay_ms": 5000}})
    out["upstream_timeout"] = "no error"
except openai.APIStatusError as e:
    out["upstream_timeout"] = error_of(e)

print(json.dumps(out))
