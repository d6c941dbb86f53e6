// Records a CPU profile of the edge worker through workerd's V8 inspector and says where the
// isolate's time went. Run by `cargo xtask bench edge-profile` (tests/src/bin/bench-edge-profile.rs),
// which starts workerd with `--inspector-addr` and the load while this records.
//
//   node edge-worker/tools/profile.mjs <inspector port> <seconds> <out.cpuprofile>
//
// Prints one JSON object: the busy time sampled and its shares by kind of code (`kinds`: the
// worker's Rust, wasm-bindgen's JS glue, Tollgate's own JS, the runtime's builtins by name,
// V8's own) and the top functions by self time (`top`). The .cpuprofile opens in Chrome's
// DevTools. Rust names need a bundle with its name section (`target/edge-names`).

import fs from "node:fs";
import { createRequire } from "node:module";

// `ws` is pinned in edge-worker/package.json: Node 20 has no WebSocket client.
const require = createRequire(import.meta.url);
const WebSocket = require("ws");

const [port, secs, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: profile.mjs <inspector port> <seconds> <out.cpuprofile>");
  process.exit(2);
}
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const target = targets.find((t) => (t.title || "").includes("tollgate-edge")) || targets[0];
const ws = new WebSocket(target.webSocketDebuggerUrl);
let nextId = 0;
const waiting = new Map();
const send = (method, params = {}) =>
  new Promise((resolve) => {
    const id = ++nextId;
    waiting.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });
ws.on("message", (m) => {
  const msg = JSON.parse(m);
  if (waiting.has(msg.id)) {
    waiting.get(msg.id)(msg);
    waiting.delete(msg.id);
  }
});
await new Promise((resolve, reject) => {
  ws.on("open", resolve);
  ws.on("error", reject);
});
await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval: 50 });
await send("Profiler.start");
await new Promise((r) => setTimeout(r, Number(secs) * 1000));
const { result } = await send("Profiler.stop");
ws.close();
const profile = result.profile;
fs.writeFileSync(out, JSON.stringify(profile));

// Self time per node (µs).
const self = new Map();
profile.samples.forEach((node, i) => {
  self.set(node, (self.get(node) || 0) + (profile.timeDeltas[i + 1] || 0));
});
const BUILTINS = new Set([
  "fetch", "Response", "Headers", "set", "get", "clone", "arrayBuffer", "waitUntil",
  "AbortController", "setTimeout", "clearTimeout", "queueMicrotask", "decode", "encode",
  "getRandomValues", "read", "write", "close", "getReader", "getWriter", "then",
]);
const kind = (f) => {
  const file = f.url.split("/").pop();
  if (f.url.includes(".wasm")) return "Rust (wasm)";
  if (file === "index.js" || /^inline\d+\.js$/.test(file)) return "wasm-bindgen glue (JS)";
  if (file.endsWith(".js")) return `Tollgate's JS (${file})`;
  if (f.functionName === "(idle)") return "idle";
  if (f.functionName === "(program)") return "runtime, native (program)";
  if (f.functionName === "(garbage collector)") return "garbage collector";
  if (f.functionName === "wasm-to-js" || f.functionName.startsWith("js-to-wasm")) return "wasm ↔ JS trampolines";
  return `runtime builtin: ${BUILTINS.has(f.functionName) ? f.functionName : "other"}`;
};
const kinds = new Map();
const fns = new Map();
let busy = 0;
for (const n of profile.nodes) {
  const t = self.get(n.id) || 0;
  const k = kind(n.callFrame);
  if (k === "idle") continue;
  busy += t;
  kinds.set(k, (kinds.get(k) || 0) + t);
  const name = `${(n.callFrame.functionName || "(anonymous)").replace(/::h[0-9a-f]{16}$/, "")} [${k}]`;
  fns.set(name, (fns.get(name) || 0) + t);
}
const share = (m, n) =>
  [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, t]) => ({ name, share: t / busy }));
console.log(JSON.stringify({ busy_ms: busy / 1000, kinds: share(kinds, 40), top: share(fns, 25) }));
