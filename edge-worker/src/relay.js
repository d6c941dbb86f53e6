// The stream relay's pump (stream.rs calls it): moves the provider's stream into the client's
// native pass-through stream, handing every chunk to the tap in wasm (`onChunk`) on the way,
// and watches for the client leaving. In JavaScript because each await from Rust
// costs two closures and a trip through wasm-bindgen's executor: with the loop here a stream
// costs ~12% less of workerd's CPU (docs/BENCHMARKS.md, "Streams: the relay's pump").

const COMPLETE = 0;
const PROVIDER_BROKE = 1;
const CLIENT_LEFT = 2;
const noop = () => {};

// `onChunk(bytes)` returns `undefined` (send the chunk as it is), `null` (send nothing now) or
// the bytes to send; `onChunk(null)` at the end returns the bytes still held, or `null`.
// Resolves to how the stream ended (the constants above); never rejects, never throws.
export function relay(body, writable, signal, upstream, onChunk, idleMs) {
  try {
    return start(body, writable, signal, upstream, onChunk, idleMs);
  } catch {
    // It could not even start (the runtime refused a reader or a writer): both ends stop.
    try {
      upstream.abort();
      writable.abort().catch(noop);
    } catch {}
    return Promise.resolve(PROVIDER_BROKE);
  }
}

function start(body, writable, signal, upstream, onChunk, idleMs) {
  const reader = body.getReader();
  const writer = writable.getWriter();
  // "relay" → "closing" (every byte written, the writer closing) → "done".
  let phase = "relay";
  let left = false;
  let waitingSince = 0;
  // The client is gone: stop the provider (it would go on generating, and billing, tokens
  // nobody reads) and release whatever waits. While closing only the close is released.
  const leave = () => {
    if (left || phase === "done") return;
    left = true;
    if (phase === "relay") {
      upstream.abort();
      reader.cancel().catch(noop);
    }
    writer.abort().catch(noop);
  };
  signal.addEventListener("abort", leave);
  if (signal.aborted) leave();
  // Rejects when the client side went away (fulfils only when the relay's own close is done).
  writer.closed.then(noop, leave);
  // A chunk the client has not taken for `idleMs`: the client stopped reading without the
  // runtime telling anyone.
  // (Where the runtime refuses a timer there is no watchdog; the other signs still work.)
  let dog;
  try {
    dog = setInterval(() => {
      if (waitingSince !== 0 && Date.now() - waitingSince >= idleMs) leave();
    }, idleMs / 3);
  } catch {}
  const deliver = async (chunk) => {
    waitingSince = Date.now();
    try {
      await writer.write(chunk);
      return !left;
    } catch {
      return false;
    } finally {
      waitingSince = 0;
    }
  };
  const pump = async () => {
    for (;;) {
      let step;
      try {
        step = await reader.read();
      } catch {
        if (left) return CLIENT_LEFT;
        // The provider's stream broke off: the client sees it cut, as the provider cut it.
        phase = "done";
        writer.abort().catch(noop);
        return PROVIDER_BROKE;
      }
      if (left) return CLIENT_LEFT;
      if (step.done) break;
      const out = onChunk(step.value);
      if (out === null) continue;
      if (!(await deliver(out === undefined ? step.value : out))) {
        leave();
        return CLIENT_LEFT;
      }
    }
    const rest = onChunk(null);
    if (rest !== null && !(await deliver(rest))) {
      leave();
      return CLIENT_LEFT;
    }
    // The close waits for the client to take the last bytes: the watchdog looks at it too (a
    // close nobody takes, with no sign from the runtime, held a record forever: a soak under a
    // CPU hog lost one), and a client that leaves now releases it.
    phase = "closing";
    waitingSince = Date.now();
    const closed = await writer.close().then(() => true, () => false);
    waitingSince = 0;
    return closed ? COMPLETE : CLIENT_LEFT;
  };
  return pump()
    .catch(() => {
      // Unexpected (the tap threw): both ends stop, as when the provider breaks off.
      const wasLeft = left;
      leave();
      return wasLeft ? CLIENT_LEFT : PROVIDER_BROKE;
    })
    .finally(() => {
      phase = "done";
      clearInterval(dog);
      signal.removeEventListener("abort", leave);
    });
}

