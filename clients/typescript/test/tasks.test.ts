import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";
import { createHtkClient } from "@htk/client";

import { approverToken, readOnlyToken, token, uniqueName, url } from "./stack.js";

const htk = createHtkClient({ url, token });
// Whoever drives a process cannot decide its tasks (separation of duties).
const person = createHtkClient({ url, token: approverToken });

/** A process waiting on a person: its human step `review` has started. */
async function waitingForReview(): Promise<string> {
  const { processId } = await htk.processes.createProcess({
    namespace: "ts-client",
    name: uniqueName("gated deploy"),
    stepDefs: [
      { key: "build", label: "Build" },
      { key: "review", label: "Review", human: true },
    ],
  });
  await htk.processes.updateProcess({ processId, type: "step_completed", step: "build" });
  await htk.processes.updateProcess({ processId, type: "step_started", step: "review" });
  return processId;
}

test("a person finds the open task and approves it; the step completes", async () => {
  const processId = await waitingForReview();
  const open = await htk.tasks.listTasks({ status: "open", processId });
  assert.equal(open.total, 1);
  const [task] = open.tasks;
  assert.deepEqual([task.step, task.label, task.status], ["review", "Review", "open"]);
  assert.equal((await htk.tasks.getTask({ taskId: task.taskId })).status, "open");

  const approved = await person.tasks.completeTask({
    taskId: task.taskId,
    outcome: "approved",
    comment: "LGTM",
  });
  assert.deepEqual([approved.status, approved.outcome, approved.comment], ["completed", "approved", "LGTM"]);
  assert.ok(approved.completedBy !== undefined && approved.completedAt !== undefined);

  const review = (await htk.processes.getProcess({ processId })).timeline[1];
  assert.deepEqual([review.status, review.completedBy], ["completed", approved.completedBy]);

  let again: unknown;
  try {
    await person.tasks.completeTask({ taskId: task.taskId, outcome: "rejected" });
  } catch (error) {
    again = error;
  }
  assert.ok(again instanceof ConnectError);
  assert.equal(again.code, Code.FailedPrecondition);
});

test("a rejection fails the step", async () => {
  const processId = await waitingForReview();
  const [task] = (await htk.tasks.listTasks({ processId })).tasks;
  await person.tasks.completeTask({ taskId: task.taskId, outcome: "rejected", comment: "wrong image" });
  const review = (await htk.processes.getProcess({ processId })).timeline[1];
  assert.deepEqual([review.status, review.error], ["failed", "rejected: wrong image"]);
});

test(
  "completing a task needs the scope tasks:complete",
  { skip: readOnlyToken ? false : "HTK_READ_ONLY_TOKEN is not set" },
  async () => {
    const processId = await waitingForReview();
    const [task] = (await htk.tasks.listTasks({ processId })).tasks;
    const reader = createHtkClient({ url, token: readOnlyToken! });
    await assert.rejects(
      reader.tasks.completeTask({ taskId: task.taskId, outcome: "approved" }),
      (error) => error instanceof ConnectError && error.code === Code.PermissionDenied,
    );
  },
);

test("the token that drives the process cannot approve its gate, whatever its scopes", async () => {
  const processId = await waitingForReview();
  const [task] = (await htk.tasks.listTasks({ processId })).tasks;
  await assert.rejects(
    htk.tasks.completeTask({ taskId: task.taskId, outcome: "approved" }),
    (error) =>
      error instanceof ConnectError &&
      error.code === Code.FailedPrecondition &&
      error.rawMessage.includes("separation of duties"),
  );
});
