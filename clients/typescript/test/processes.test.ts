import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { createHtkClient, type HtkClient } from "@htk/client";

import { readOnlyToken, token, transports, uniqueName, url } from "./stack.js";

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError, `not a ConnectError: ${error}`);
    return error;
  }
  assert.fail("the call succeeded");
}

for (const [transport, create] of Object.entries(transports)) {
  describe(`over ${transport}`, () => {
    const htk = create({ url, token });

    test("the documented workflow", async () => {
      const name = uniqueName("Deploy v2.1.0");
      const created = await htk.processes.createProcess({
        namespace: "ts-client",
        name,
        stepDefs: [
          { key: "build", label: "Build" },
          { key: "test", label: "Test" },
          { key: "review", label: "Review", human: true },
        ],
      });
      assert.equal(created.status, "running");
      assert.match(created.namespace, /\.ts-client$/);
      assert.equal(created.taskIds.length, 1);
      const processId = created.processId;

      const updates = [
        { type: "step_started", step: "build", detail: "Building Docker image..." },
        { type: "progress", step: "build", message: "Compiling...", percent: 50 },
        {
          type: "step_completed",
          step: "build",
          detail: "Build successful",
          data: { image_tag: "v2.1.0-abc123" },
        },
        { type: "step_started", step: "test" },
      ];
      for (const update of updates) {
        const ack = await htk.processes.updateProcess({ processId, ...update });
        assert.equal(ack.updateType, update.type);
        assert.ok(ack.timestamp);
      }

      const page = await htk.processes.listProcesses({
        status: "running",
        namespace: created.namespace,
        search: name,
        sort: "newest",
        limit: 10,
      });
      assert.equal(page.total, 1);
      assert.deepEqual(
        page.processes.map((summary) => [summary.processId, summary.stepCount]),
        [[processId, 3]],
      );

      const process = await htk.processes.getProcess({ processId });
      assert.equal(process.currentStep, "test");
      assert.deepEqual(
        process.timeline.map((entry) => entry.status),
        ["completed", "running", "pending"],
      );
      assert.deepEqual(process.timeline[0].data, { image_tag: "v2.1.0-abc123" });
      assert.ok(process.timeline[0].durationMs! >= 0);

      await htk.processes.updateProcess({ processId, type: "completed", summary: "All done!" });
      const finished = await htk.processes.getProcess({ processId });
      assert.equal(finished.status, "completed");
      assert.equal(finished.summary, "All done!");
      assert.ok(timestampDate(finished.finishedAt!) >= timestampDate(finished.startedAt!));
    });

    test("each error is a ConnectError with its gRPC code and the server's message", async () => {
      const { processId } = await htk.processes.createProcess({
        namespace: "ts-client",
        name: uniqueName("errors"),
        stepDefs: [{ key: "build", label: "Build" }],
      });

      const unknownToken = create({ url, token: "htk_not-a-token" });
      assert.equal((await rejection(unknownToken.processes.listProcesses({}))).code, Code.Unauthenticated);

      const missing = await rejection(
        htk.processes.getProcess({ processId: "00000000-0000-4000-8000-000000000000" }),
      );
      assert.equal(missing.code, Code.NotFound);

      const outOfRange = await rejection(
        htk.processes.updateProcess({ processId, type: "progress", step: "build", percent: 101 }),
      );
      assert.equal(outOfRange.code, Code.InvalidArgument);
      assert.match(outOfRange.rawMessage, /^percent: /);
    });

    test(
      "a token without processes:write is refused with PermissionDenied",
      { skip: readOnlyToken ? false : "HTK_READ_ONLY_TOKEN is not set" },
      async () => {
        const reader = create({ url, token: readOnlyToken! });
        const refused = await rejection(
          reader.processes.createProcess({
            namespace: "ts-client",
            name: uniqueName("refused"),
            stepDefs: [{ key: "build", label: "Build" }],
          }),
        );
        assert.equal(refused.code, Code.PermissionDenied);
      },
    );
  });
}

describe("listing", () => {
  const htk: HtkClient = createHtkClient({ url, token });

  test("filters by status, namespace and search; sorts; pages by offset and by token", async () => {
    const namespace = uniqueName("ts-list");
    const created = [];
    for (const name of ["alpha build", "beta build", "gamma deploy"]) {
      created.push(
        await htk.processes.createProcess({ namespace, name, stepDefs: [{ key: "only", label: "Only" }] }),
      );
    }
    const [alpha, beta, gamma] = created;
    await htk.processes.updateProcess({ processId: beta.processId, type: "failed", error: "broken" });
    const inNamespace = { namespace: alpha.namespace };
    const ids = (page: { processes: { processId: string }[] }) =>
      page.processes.map((summary) => summary.processId);

    const newest = await htk.processes.listProcesses(inNamespace);
    assert.deepEqual(ids(newest), [gamma, beta, alpha].map((process) => process.processId));
    assert.equal(newest.total, 3);
    const oldest = await htk.processes.listProcesses({ ...inNamespace, sort: "oldest" });
    assert.deepEqual(ids(oldest), [alpha, beta, gamma].map((process) => process.processId));

    const running = await htk.processes.listProcesses({ ...inNamespace, status: "running" });
    assert.deepEqual(ids(running), [gamma.processId, alpha.processId]);
    const builds = await htk.processes.listProcesses({ ...inNamespace, search: "BUILD" });
    assert.deepEqual(ids(builds), [beta.processId, alpha.processId]);

    const second = await htk.processes.listProcesses({ ...inNamespace, limit: 1, offset: 1 });
    assert.deepEqual([ids(second), second.total, second.limit, second.offset], [[beta.processId], 3, 1, 1]);

    const paged = [];
    let pageToken = "";
    do {
      const page = await htk.processes.listProcesses({ ...inNamespace, limit: 2, pageToken });
      paged.push(...ids(page));
      pageToken = page.nextPageToken;
    } while (pageToken);
    assert.deepEqual(paged, ids(newest));

    const badToken = await rejection(htk.processes.listProcesses({ ...inNamespace, pageToken: "garbage" }));
    assert.equal(badToken.code, Code.InvalidArgument);
  });
});
