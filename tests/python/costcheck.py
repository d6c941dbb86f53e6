"""Prices Tollgate's cost corpus with LiteLLM's cost function, for `cargo xtask costcheck`.

Usage: costcheck.py CORPUS_DIR COST_MD

For every case of CORPUS_DIR (`NNN_name.expect.json` beside the provider's `.json` or `.sse`
body) it prices the same call with LiteLLM, from the corpus's own price list, and writes the
comparison table into COST_MD between `<!-- costcheck:table -->` and `<!-- /costcheck:table -->`,
keeping the rest of the file (the hand-written explanations). A case whose results differ (by
more than 1 nano-USD, or LiteLLM raised) and that has no `### <case>` explanation yet gets a
placeholder paragraph under `## Differences`. Prints one line per case.

How each case is handed to LiteLLM (what LiteLLM itself does with such a response):
- the body goes through the provider's own response transformation (`transform_response` of
  the provider's chat config, OpenAI's Responses config), so e.g. LiteLLM's xAI handling of
  reasoning tokens applies; an error body raises the provider's error, as LiteLLM's handlers
  do on an error status;
- streamed chat bodies go through the provider's chunk parser and `litellm.stream_chunk_builder`
  (which is also how LiteLLM bills a stream that broke off); a Responses stream is priced from
  its `response.completed`, and one cut before it as LiteLLM's Responses stream iterator bills
  a disconnect (usage estimated from the relayed text). The corpus keeps a request's size, not
  its messages, so LiteLLM counts no prompt in those estimates;
- `litellm.completion_cost(completion_response=…, model=<requested model>,
  custom_llm_provider=…)`, with the request's service tier in `optional_params` as LiteLLM's
  own logging passes it (LiteLLM then lets the response's tier win, as Tollgate does; the
  `service_tier=` argument would override the response's answer), and for the Responses API
  the request's declared tools (echoed in the response's `tools`) as
  `standard_built_in_tools_params`, which LiteLLM's logging builds from the request;
- a Batch API output line is priced with `litellm.cost_per_token(call_type="retrieve_batch")`,
  LiteLLM's batch pricing (`service_tier` has no "batch" value in LiteLLM);
- prices: LiteLLM's shipped map is emptied and only the corpus's `prices.json` is registered
  (`litellm.register_model`), under LiteLLM's key for the provider and under every key of the
  shipped map that names the same model (its dated snapshots), plus the canonical OpenRouter
  slugs of the vendor entries Tollgate resolves OpenRouter calls to. Both tools price from the
  same rates; a difference is in the counting, not in the price list.

Sets `LITELLM_LOCAL_MODEL_COST_MAP=True` (unless already set) before LiteLLM loads: no fetch of
the remote price map.
"""

import datetime
import json
import logging
import os
import re
import sys
import traceback
import warnings
from decimal import Decimal
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm loads its map

import httpx  # noqa: E402
import litellm  # noqa: E402
from litellm.litellm_core_utils.llm_cost_calc.tool_call_cost_tracking import (  # noqa: E402
    StandardBuiltInToolCostTracking,
)
from litellm.responses.streaming_iterator import _estimate_usage_safely  # noqa: E402
from litellm.types.utils import LlmProviders  # noqa: E402

litellm.suppress_debug_info = True
logging.getLogger("LiteLLM").setLevel(logging.ERROR)  # register_model warns of every model not shipped
warnings.filterwarnings("ignore", module="pydantic")  # Perplexity's usage.cost object is not a float

TABLE_START = "<!-- costcheck:table -->"
TABLE_END = "<!-- /costcheck:table -->"
DIFF_HEADING = "## Differences"
NANO = Decimal("0.000000001")

# Tollgate's provider → LiteLLM's `custom_llm_provider` (a self-hosted vLLM's OpenAI server is
# LiteLLM's `hosted_vllm`; its `vllm` is the in-process library).
PROVIDERS = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "openrouter": "openrouter",
    "xai": "xai",
    "perplexity": "perplexity",
    "vllm": "hosted_vllm",
    "dashscope": "dashscope",
}

# OpenRouter's canonical slug for a vendor entry of prices.json (what OpenRouter's models list
# and so `cargo xtask prices --from` would name it). LiteLLM's shipped map has no OpenRouter
# entries; a LiteLLM user registers these.
OPENROUTER_SLUGS = {
    ("anthropic", "claude-sonnet-4-5"): "anthropic/claude-sonnet-4.5",
    ("gemini", "gemini-2.5-flash"): "google/gemini-2.5-flash",
    ("gemini", "gemini-2.5-flash-image"): "google/gemini-2.5-flash-image",
    ("openai", "gpt-4o"): "openai/gpt-4o",
}

MODES = {"text-embedding-3-small": "embedding", "gpt-3.5-turbo-instruct": "completion"}


class _Log:
    """What the provider transforms need of LiteLLM's logging object (nothing is logged)."""

    model_call_details: dict = {}

    def post_call(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *a, **k: None


# --- prices ----------------------------------------------------------------------------------


def per_token(per_million):
    return float(Decimal(per_million) / Decimal(1_000_000))


def litellm_entry(m):
    """One prices.json model → LiteLLM's per-token fields."""
    e = {
        "litellm_provider": PROVIDERS[m["provider"]],
        "mode": MODES.get(m["model"], "chat"),
        "input_cost_per_token": per_token(m["input"]),
        "output_cost_per_token": per_token(m["output"]),
    }
    fields = {
        "cached_input": "cache_read_input_token_cost",
        "cache_write": "cache_creation_input_token_cost",
        "reasoning": "output_cost_per_reasoning_token",
        "audio_input": "input_cost_per_audio_token",
        "audio_output": "output_cost_per_audio_token",
        "image_input": "input_cost_per_image_token",
        "image_output": "output_cost_per_image_token",
    }
    for ours, theirs in fields.items():
        if m.get(ours) is not None:
            e[theirs] = per_token(m[ours])
    suffixes = {"flex": "_flex", "priority": "_priority", "batch": "_batches"}
    for tier, rates in (m.get("tiers") or {}).items():
        s = suffixes[tier]
        e["input_cost_per_token" + s] = per_token(rates["input"])
        e["output_cost_per_token" + s] = per_token(rates["output"])
        if rates.get("cached_input") is not None:
            e["cache_read_input_token_cost" + s] = per_token(rates["cached_input"])
    if m.get("web_search") is not None:
        fee = float(Decimal(m["web_search"]))
        e["search_context_cost_per_query"] = {
            "search_context_size_low": fee,
            "search_context_size_medium": fee,
            "search_context_size_high": fee,
        }
    # file_search: LiteLLM has no per-call field (its `file_search_cost_per_1k_calls` is returned
    # as the cost of one call); its built-in default is OpenAI's $0.0025 a call, the corpus's fee.
    if m.get("per_request") is not None:
        fee = float(Decimal(m["per_request"]))
        e["input_cost_per_request"] = fee
        if m["provider"] == "perplexity":  # LiteLLM's map carries Sonar's request fee here
            e["search_context_cost_per_query"] = {
                "search_context_size_low": fee,
                "search_context_size_medium": fee,
                "search_context_size_high": fee,
            }
    if m.get("max_output_tokens") is not None:
        e["max_output_tokens"] = m["max_output_tokens"]
    return e


def undated(name):
    """A model name without its snapshot date (gpt-4o-2024-08-06, grok-4.20-0309-reasoning)."""
    name = re.sub(r"-\d{4}-\d{2}-\d{2}(?=$|-)", "", name)
    name = re.sub(r"-\d{8}(?=$|-)", "", name)
    return re.sub(r"-\d{4}(?=$|-)", "", name)


def register_prices(prices_path):
    """Empties LiteLLM's shipped map and registers the corpus's prices; returns the keys."""
    shipped = dict(litellm.model_cost)
    litellm.model_cost.clear()
    models = json.loads(Path(prices_path).read_text())["models"]
    latest = {}
    for m in models:  # the corpus has one entry per model; keep the latest if it ever has more
        key = (m["provider"], m["model"])
        if key not in latest or m["effective_from"] > latest[key]["effective_from"]:
            latest[key] = m
    registered = {}
    for (provider, model), m in sorted(latest.items()):
        entry = litellm_entry(m)
        lp = entry["litellm_provider"]
        key = model if lp in ("openai", "anthropic") else f"{lp}/{model}"  # LiteLLM's map's keys
        registered[key] = entry
        # The shipped map's dated snapshots of the model (gpt-4o-2024-08-06, xai/grok-4.20-0309-
        # reasoning; OpenAI's legacy completion models are listed as `text-completion-openai`).
        providers = {lp, "text-completion-openai"} if lp == "openai" else {lp}
        for k, v in shipped.items():
            if (
                k != key
                and v.get("litellm_provider") in providers
                and "/" not in k.removeprefix(f"{lp}/")
                and undated(k) == key
            ):
                registered[k] = dict(entry, litellm_provider=v["litellm_provider"])
        slug = OPENROUTER_SLUGS.get((provider, model))
        if slug:
            registered[f"openrouter/{slug}"] = dict(entry, litellm_provider="openrouter")
    litellm.register_model(registered)
    return registered


# --- responses -------------------------------------------------------------------------------


def http_response(body):
    return httpx.Response(200, json=body, request=httpx.Request("POST", "http://corpus.invalid/"))


def chat_config(provider, model):
    """The provider's chat config; Gemini is called on its OpenAI-compatible endpoint."""
    if provider in ("gemini", "openai", "azure"):
        return litellm.OpenAIGPTConfig()
    return litellm.ProviderConfigManager.get_provider_chat_config(model=model, provider=LlmProviders(provider))


def chat_response(provider, model, body):
    cfg = chat_config(provider, model)
    if "error" in body and "usage" not in body:
        # An error status: LiteLLM's handlers raise the provider's error before any transform.
        status = 404 if (body["error"] or {}).get("code") == "model_not_found" else 400
        raise cfg.get_error_class(error_message=json.dumps(body), status_code=status, headers={})
    return cfg.transform_response(
        model=model,
        raw_response=http_response(body),
        model_response=litellm.ModelResponse(),
        logging_obj=_Log(),
        request_data={},
        messages=[],
        optional_params={},
        litellm_params={},
        encoding=None,
    )


def sse_events(text):
    """(event name, data) of every SSE event with a JSON data line ([DONE] and comments dropped)."""
    out, event = [], None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                out.append((event, json.loads(data)))
            event = None
    return out


def chat_stream_response(provider, model, text):
    cfg = chat_config(provider, model)
    chunks = [d for _, d in sse_events(text)]
    parser = cfg.get_model_response_iterator(streaming_response=iter(()), sync_stream=True, json_mode=False)
    parsed = [parser.chunk_parser(c) for c in chunks]
    return litellm.stream_chunk_builder(parsed, messages=[])


def responses_response(body):
    cfg = litellm.ProviderConfigManager.get_provider_responses_api_config(provider=LlmProviders.OPENAI)
    return cfg.transform_response_api_response(model="", raw_response=http_response(body), logging_obj=_Log())


def responses_stream_response(text, model):
    """The stream's last response snapshot (`response.completed`'s). A stream cut before it is
    billed as LiteLLM's Responses stream iterator bills a disconnect: `response.created`'s
    snapshot, status incomplete, with the usage it estimates from the text relayed so far (and
    the request's input, which the corpus does not keep: only its size)."""
    events = sse_events(text)
    snapshots = [d["response"] for _, d in events if isinstance(d.get("response"), dict)]
    last = snapshots[-1]
    if last.get("usage") is not None:
        return responses_response(last)
    relayed = "".join(d.get("delta", "") for e, d in events if e == "response.output_text.delta")
    usage = _estimate_usage_safely(last.get("model") or model, None, {}, relayed, use_default_image_token_count=False)
    partial = responses_response(last)
    return partial.model_copy(update={"status": "incomplete", "usage": usage})


def built_in_tools_params(body):
    """The request's declared tools as LiteLLM's logging reads them from the request; the
    Responses API echoes them in the response's `tools`."""
    kwargs = {"tools": body.get("tools") or []}
    return {
        "web_search_options": StandardBuiltInToolCostTracking.get_web_search_options(kwargs),
        "file_search": StandardBuiltInToolCostTracking.get_file_search_tool_call(kwargs),
    }


# --- one case --------------------------------------------------------------------------------


def litellm_cost(case, payload_path):
    """LiteLLM's cost of one case (USD float), or raises; and a note on how it was priced."""
    provider = PROVIDERS[case["provider"]]
    model = case["model_requested"]
    tier = case.get("service_tier_requested") or None
    endpoint = case["endpoint"]
    text = payload_path.read_text()
    stream = payload_path.suffix == ".sse"
    body = None if stream else json.loads(text)

    if tier == "batch":
        usage = chat_response(provider, model, body).usage
        p, c = litellm.cost_per_token(
            model=model, custom_llm_provider=provider, usage_object=usage, call_type="retrieve_batch"
        )
        return p + c, "cost_per_token(call_type=retrieve_batch)"

    call_type, tools = None, None
    if endpoint == "chat.completions":
        resp = chat_stream_response(provider, model, text) if stream else chat_response(provider, model, body)
        how = "stream_chunk_builder" if stream else "chat transform_response"
    elif endpoint == "responses":
        resp = responses_stream_response(text, model) if stream else responses_response(body)
        how = "last response event" if stream else "responses transform"
        call_type = "responses"
        tools = built_in_tools_params(resp.model_dump() if stream else body)
    elif endpoint == "embeddings":
        resp = litellm.EmbeddingResponse(**body)
        call_type, how = "embedding", "EmbeddingResponse"
    elif endpoint == "completions":
        resp = litellm.TextCompletionResponse(**body)
        call_type, how = "text_completion", "TextCompletionResponse"
    else:  # the Images API (an edit)
        resp = litellm.ImageResponse(**body)
        call_type, how = "image_edit", "ImageResponse"

    kwargs = {}
    if tier:
        kwargs["optional_params"] = {"service_tier": tier}
    if call_type:
        kwargs["call_type"] = call_type
    if tools:
        kwargs["standard_built_in_tools_params"] = tools
    cost = litellm.completion_cost(completion_response=resp, model=model, custom_llm_provider=provider, **kwargs)
    return cost, how


def short_error(e):
    text = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/").replace("`", "'")
    text = re.sub(r"\s+", " ", text).split(" Add it here")[0]
    return text if len(text) <= 120 else text[:117] + "…"


# --- the table -------------------------------------------------------------------------------


def usd(d, places=9):
    """A Decimal USD amount, `places` decimals at most (LiteLLM's floats are shown to 12, so a
    half nano shows), no trailing zeros."""
    s = format(d.quantize(Decimal(1).scaleb(-places)), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def run(corpus, out):
    registered = register_prices(corpus / "prices.json")
    print(f"  prices.json registered with LiteLLM as: {', '.join(sorted(registered))}")
    rows = []
    for expect_path in sorted(corpus.glob("*.expect.json")):
        stem = expect_path.name.removesuffix(".expect.json")
        case = json.loads(expect_path.read_text())
        payload = next(p for p in (corpus / f"{stem}.json", corpus / f"{stem}.sse") if p.exists())
        tollgate = Decimal(case["expect"]["cost_usd"])
        row = {"case": stem, "describes": case["describes"], "tollgate": tollgate}
        try:
            cost, how = litellm_cost(case, payload)
            row["litellm"] = Decimal(repr(float(cost)))
            row["how"] = how
            diff = row["litellm"] - tollgate
            row["diff"] = diff
            row["status"] = "different" if abs(diff) > NANO else "same"
        except Exception as e:  # LiteLLM raised: its text is the result
            row["error"] = short_error(e)
            row["status"] = "error"
            if "--trace" in sys.argv:
                traceback.print_exc()
        rows.append(row)
        lite = row.get("error") or f"{usd(row['litellm'], 12)} ({row['how']})"
        print(f"  {stem:<46} {row['status']:<9} Tollgate {usd(tollgate):>11}  LiteLLM {lite}", flush=True)
    write_doc(out, rows)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("same", "different", "error")}
    print(
        f"costcheck: {len(rows)} cases: {counts['same']} same, {counts['different']} different, "
        f"{counts['error']} LiteLLM errors; written to {out}"
    )


def short_describes(text):
    """The case's description up to its first `: ` or `; ` outside parentheses."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch in ":;" and text[i + 1 : i + 2] == " ":
            text = text[:i]
            break
    return text if len(text) <= 110 else text[:107].rstrip() + "…"


def table(rows):
    counts = {s: sum(r["status"] == s for r in rows) for s in ("same", "different", "error")}
    lines = [
        TABLE_START,
        f"LiteLLM {litellm_version()}, run {datetime.date.today().isoformat()}: {len(rows)} cases, "
        f"**{counts['same']} the same** (within 1 nano-USD), **{counts['different']} different**, "
        f"**{counts['error']} LiteLLM errors**. Amounts in USD; difference = LiteLLM − Tollgate.",
        "",
        "| case | what it covers | Tollgate | LiteLLM | difference |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["status"] == "error":
            lite, diff = f"error: `{r['error']}`", "—"
        else:
            lite = usd(r["litellm"], 12)
            diff = "0" if r["status"] == "same" else ("+" if r["diff"] > 0 else "−") + usd(abs(r["diff"]), 12)
        link = f"[{r['case']}](#{r['case']})" if r["status"] != "same" else r["case"]
        lines.append(f"| {link} | {short_describes(r['describes'])} | {usd(r['tollgate'])} | {lite} | {diff} |")
    lines.append(TABLE_END)
    return "\n".join(lines)


def litellm_version():
    from importlib.metadata import version

    return version("litellm")


def write_doc(out, rows):
    doc = out.read_text() if out.exists() else f"# Cost check\n\n{TABLE_START}\n{TABLE_END}\n\n{DIFF_HEADING}\n"
    if TABLE_START not in doc or TABLE_END not in doc:
        raise SystemExit(f"{out}: no {TABLE_START} … {TABLE_END} markers; add them where the table goes")
    head, rest = doc.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    doc = head + table(rows) + tail
    if DIFF_HEADING not in doc:
        doc = doc.rstrip("\n") + f"\n\n{DIFF_HEADING}\n"
    for r in rows:
        explained = re.search(rf"^### {re.escape(r['case'])}\b", doc, re.M)
        if r["status"] == "same" and explained:
            print(f"  note: {r['case']} is the same now; its explanation in {out} may be stale")
        if r["status"] == "same" or explained:
            continue
        doc = doc.rstrip("\n") + f"\n\n### {r['case']}\n\nTODO: explain the difference.\n"
        print(f"  note: {r['case']} differs and has no explanation yet: placeholder added to {out}")
    out.write_text(doc)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 2:
        raise SystemExit(__doc__)
    run(Path(args[0]), Path(args[1]))
