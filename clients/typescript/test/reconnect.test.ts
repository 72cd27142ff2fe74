// The watch's reconnection rules against a scripted server, without a
// network: what it resumes from, what it delivers once, when it gives up.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import type { Client } from "@connectrpc/connect";
import {
  Code,
  ConnectError,
  type ProcessService,
  type WatchedProcess,
  type WatchProcessResponse,
  watchProcess,
} from "@htk/client";

type Kind = WatchProcessResponse["kind"];
/** One connection: the messages it sends, then how it ends (undefined: cleanly). */
type Script = { messages: Kind[]; end?: ConnectError };

const snapshot = (seq: number, status = "running"): Kind =>
  ({ case: "process", value: { seq, status } }) as Kind;
const event = (seq: number, type = "progress"): Kind => ({ case: "event", value: { seq, type } }) as Kind;
const heartbeat = { case: "heartbeat", value: {} } as Kind;
const unavailable = () => new ConnectError("upstream connect error", Code.Unavailable);

/** A ProcessService client whose WatchProcess plays `scripts`, one per connection, and records each request's afterSeq. */
function scripted(scripts: Script[]) {
  const afterSeqs: (number | undefined)[] = [];
  const processes = {
    watchProcess: async function* (request: { afterSeq?: number }) {
      afterSeqs.push(request.afterSeq);
      const script = scripts.shift();
      assert.ok(script, "the watch connected once more than scripted");
      for (const kind of script.messages) yield { kind } as WatchProcessResponse;
      if (script.end) throw script.end;
    },
  } as unknown as Client<typeof ProcessService>;
  return { processes, afterSeqs };
}

async function delivered(watch: AsyncIterable<WatchedProcess>): Promise<string[]> {
  const seen: string[] = [];
  for await (const { kind } of watch) seen.push(kind.case === "event" ? `event ${kind.value.seq}` : "process");
  return seen;
}

const fast = { firstDelayMs: 1, maxDelayMs: 2 };

describe("watchProcess", () => {
  test("resumes after the last event it delivered, and delivers each once", async () => {
    const { processes, afterSeqs } = scripted([
      { messages: [snapshot(0), event(1), event(2)], end: unavailable() },
      // A server that sent an event again: still delivered once.
      { messages: [heartbeat, event(2), event(3)] },
      { messages: [event(4, "completed")] },
    ]);
    const seen = await delivered(watchProcess(processes, { processId: "p" }, fast));
    assert.deepEqual(seen, ["process", "event 1", "event 2", "event 3", "event 4"]);
    // A stream that ended cleanly before the process finished is resumed too.
    assert.deepEqual(afterSeqs, [undefined, 2, 3]);
  });

  // Each event that finishes a process ends the watch: no connection follows it.
  for (const finish of ["completed", "failed", "cancelled"]) {
    test(`resumes from the snapshot's seq when no event came after it, until ${finish}`, async () => {
      const { processes, afterSeqs } = scripted([
        { messages: [snapshot(5)], end: unavailable() },
        { messages: [event(6, finish)] },
      ]);
      assert.deepEqual(await delivered(watchProcess(processes, { processId: "p" }, fast)), ["process", "event 6"]);
      assert.deepEqual(afterSeqs, [undefined, 5]);
    });
  }

  test("an in-band error breaks the stream, which resumes", async () => {
    const inBand = { case: "error", value: { code: Code.Unavailable, message: "shutting down" } } as Kind;
    const { processes, afterSeqs } = scripted([
      { messages: [event(3), inBand] },
      { messages: [event(4, "completed")] },
    ]);
    const seen = await delivered(watchProcess(processes, { processId: "p", afterSeq: 2 }, fast));
    assert.deepEqual(seen, ["event 3", "event 4"]);
    assert.deepEqual(afterSeqs, [2, 3]);
  });

  test("a process that finished with nothing after afterSeq ends with its snapshot", async () => {
    const { processes } = scripted([{ messages: [snapshot(4, "completed")] }]);
    assert.deepEqual(await delivered(watchProcess(processes, { processId: "p", afterSeq: 4 }, fast)), ["process"]);
  });

  test("a refusal ends the watch at once with the API's error", async () => {
    const { processes, afterSeqs } = scripted([
      { messages: [], end: new ConnectError("no such process", Code.NotFound) },
    ]);
    await assert.rejects(
      delivered(watchProcess(processes, { processId: "p" }, fast)),
      (error) => error instanceof ConnectError && error.code === Code.NotFound,
    );
    assert.equal(afterSeqs.length, 1);
  });

  test("gives up with the last error after `attempts` connections in a row without a message", async () => {
    const states: string[] = [];
    const { processes, afterSeqs } = scripted([
      { messages: [snapshot(0)], end: unavailable() },
      ...[1, 2, 3].map(() => ({ messages: [], end: unavailable() })),
    ]);
    const watch = watchProcess(processes, { processId: "p" }, { ...fast, attempts: 3, onState: (s) => states.push(s) });
    await assert.rejects(delivered(watch), (error) => error instanceof ConnectError && error.code === Code.Unavailable);
    assert.equal(afterSeqs.length, 4);
    assert.deepEqual(states, ["connecting", "live", "reconnecting", "reconnecting", "reconnecting"]);
  });

  test("an aborted signal ends the watch quietly, even while it waits to reconnect", async () => {
    const abort = new AbortController();
    const { processes } = scripted([{ messages: [snapshot(0)], end: unavailable() }]);
    const watch = watchProcess(
      processes,
      { processId: "p" },
      { firstDelayMs: 60_000, onState: (state) => state === "reconnecting" && abort.abort(), signal: abort.signal },
    );
    assert.deepEqual(await delivered(watch), ["process"]);
  });
});
