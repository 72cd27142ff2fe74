import assert from "node:assert/strict";
import { test } from "node:test";

import type { WatchProcessResponse } from "@htk/client";

import { token, transports, uniqueName, url } from "./stack.js";

// Long enough for a loaded machine; a stream that does not end by then fails
// the test (DeadlineExceeded) instead of hanging it.
const STREAM_TIMEOUT_MS = 30_000;

for (const [transport, create] of Object.entries(transports)) {
  test(`over ${transport}, watchProcess streams the process, then each update as it is accepted, and ends when it completes`, async () => {
    const htk = create({ url, token });
    const { processId } = await htk.processes.createProcess({
      namespace: "ts-client",
      name: uniqueName("watched deploy"),
      stepDefs: [{ key: "build", label: "Build" }],
    });
    const updates = [
      { type: "step_started", step: "build", detail: "Building Docker image..." },
      { type: "progress", step: "build", message: "Compiling...", percent: 50 },
      { type: "step_completed", step: "build" },
      { type: "completed", summary: "All done!" },
    ];

    // Each update is sent only once the previous message has arrived, so every
    // event after the snapshot is one the stream delivered live.
    const received: WatchProcessResponse["kind"][] = [];
    const stream = htk.processes.watchProcess({ processId }, { timeoutMs: STREAM_TIMEOUT_MS });
    for await (const message of stream) {
      if (message.kind.case === "heartbeat") continue;
      received.push(message.kind);
      const update = updates[received.length - 1];
      if (update) await htk.processes.updateProcess({ processId, ...update });
    }

    const [snapshot, ...events] = received;
    assert.equal(snapshot.case, "process");
    assert.deepEqual([snapshot.value.processId, snapshot.value.status], [processId, "running"]);
    assert.ok(events.every((kind) => kind.case === "event"));
    const logged = events.map((kind) => kind.value);
    assert.deepEqual(
      logged.map((event) => [event.seq, event.type, event.step]),
      [
        [1, "step_started", "build"],
        [2, "progress", "build"],
        [3, "step_completed", "build"],
        [4, "completed", undefined],
      ],
    );
    assert.equal(logged[0].detail, "Building Docker image...");
    assert.deepEqual([logged[1].message, logged[1].percent], ["Compiling...", 50]);
    assert.equal(logged[3].summary, "All done!");
  });
}
