// The watch through a killed server: HTK_WORKER_PID names the only worker
// of the stack the tests call, which this test kills (SIGKILL) mid-stream;
// tests/chaos/test_client_resume.py starts such a stack and sets it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as pause } from "node:timers/promises";

import { Code, ConnectError, type HtkClient, type WatchedProcess, type WatchState } from "@htk/client";

import { token, transports, uniqueName, url } from "./stack.js";

const workerPid = process.env.HTK_WORKER_PID;
// While the worker is down Envoy answers Unavailable: retried this many
// times, a pause apart, which outlasts a restart on a loaded machine.
const UPDATE_ATTEMPTS = 240;
const UPDATE_PAUSE_MS = 500;

/** An update, retried while the API is unavailable; its idempotency key makes a retry harmless. */
async function update(htk: HtkClient, processId: string, request: { type: string; step?: string; percent?: number }) {
  const key = `${processId}-${request.type}-${request.percent ?? ""}`;
  for (let attempt = 1; ; attempt++) {
    try {
      return await htk.processes.updateProcess({ processId, ...request }, { headers: { "Idempotency-Key": key } });
    } catch (error) {
      const unavailable = error instanceof ConnectError && error.code === Code.Unavailable;
      if (!unavailable || attempt === UPDATE_ATTEMPTS) throw error;
      await pause(UPDATE_PAUSE_MS);
    }
  }
}

/** Reads a watch to its end, telling `arrived` after each message. */
async function follow(
  watch: AsyncIterable<WatchedProcess>,
  arrived: () => void,
): Promise<WatchedProcess["kind"][]> {
  const received: WatchedProcess["kind"][] = [];
  for await (const { kind } of watch) {
    received.push(kind);
    arrived();
  }
  return received;
}

test(
  "a watch resumes after the server's worker is killed mid-stream: every event arrives exactly once",
  { skip: workerPid ? false : "HTK_WORKER_PID is not set" },
  async () => {
    const htk = transports["gRPC (Node)"]({ url, token });
    const { processId } = await htk.processes.createProcess({
      namespace: "ts-client",
      name: uniqueName("resumed watch"),
      stepDefs: [{ key: "build", label: "Build" }],
    });

    // One watch over each transport, on the same process; each arrival wakes
    // whoever waits for a count of messages.
    let wake = () => {};
    const counts = Object.keys(transports).map(() => 0);
    const states: WatchState[][] = [];
    const watches = Object.values(transports).map((create, index) => {
      const seen: WatchState[] = [];
      states.push(seen);
      const watch = create({ url, token }).watch(
        { processId },
        { onState: (state) => seen.push(state), firstDelayMs: 200, maxDelayMs: 2000, attempts: 200 },
      );
      return follow(watch, () => {
        counts[index]++;
        wake();
      });
    });
    const everyWatchHas = async (messages: number) => {
      while (counts.some((count) => count < messages)) await new Promise<void>((resolve) => (wake = resolve));
    };

    // The snapshot and two events reach both watches before the kill.
    await everyWatchHas(1);
    await update(htk, processId, { type: "step_started", step: "build" });
    await update(htk, processId, { type: "progress", step: "build", percent: 10 });
    await everyWatchHas(3);

    process.kill(Number(workerPid), "SIGKILL");
    const after = [20, 40, 60, 80].map((percent) => ({ type: "progress", step: "build", percent }));
    for (const request of [...after, { type: "step_completed", step: "build" }, { type: "completed" }]) {
      await update(htk, processId, request);
    }

    const expected = [
      [1, "step_started", undefined],
      [2, "progress", 10],
      ...after.map((request, index) => [index + 3, "progress", request.percent]),
      [7, "step_completed", undefined],
      [8, "completed", undefined],
    ];
    for (const [index, received] of (await Promise.all(watches)).entries()) {
      const [snapshot, ...events] = received;
      assert.equal(snapshot.case, "process");
      assert.ok(events.every((kind) => kind.case === "event"));
      assert.deepEqual(
        events.map((kind) => (kind.case === "event" ? [kind.value.seq, kind.value.type, kind.value.percent] : [])),
        expected,
      );
      assert.ok(states[index].includes("reconnecting"), `the watch never broke: ${states[index]}`);
    }
  },
);
