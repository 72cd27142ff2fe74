// WebhookService and TrustService through the client. The stack must allow
// webhooks to loopback URLs (HTK_WEBHOOK_ALLOW_PRIVATE=1): the webhooks made
// here point at 127.0.0.1, and at a namespace no process uses, so nothing is
// sent.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";
import { createHtkClient } from "@htk/client";

import { required, token, uniqueName, url } from "./stack.js";

/** Whether `error` is INVALID_ARGUMENT naming `field`, as every refused input is. */
function namesField(field: string): (error: unknown) => boolean {
  return (error) =>
    error instanceof ConnectError && error.code === Code.InvalidArgument && error.rawMessage.includes(field);
}

test("a webhook is created with its secret, read and listed without it, and deleted", async () => {
  const htk = createHtkClient({ url, token: required("HTK_WEBHOOKS_TOKEN") });
  const description = uniqueName("ts client");
  const created = await htk.webhooks.createWebhook({
    url: "http://127.0.0.1:9/htk",
    events: ["task.opened", "process.failed"],
    namespace: uniqueName("ts-client-hooks"),
    description,
  });
  assert.match(created.secret ?? "", /^whsec_/);
  assert.deepEqual([created.enabled, created.description], [true, description]);

  const read = await htk.webhooks.getWebhook({ webhookId: created.webhookId });
  assert.deepEqual([read.secret, read.url, read.events], [undefined, created.url, created.events]);

  const listed = (await htk.webhooks.listWebhooks({})).webhooks.find((hook) => hook.webhookId === created.webhookId);
  assert.ok(listed !== undefined, "the list holds the webhook");
  assert.equal(listed.secret, undefined);

  const deleted = await htk.webhooks.deleteWebhook({ webhookId: created.webhookId });
  assert.equal(deleted.webhookId, created.webhookId);
  await assert.rejects(
    htk.webhooks.getWebhook({ webhookId: created.webhookId }),
    (error) => error instanceof ConnectError && error.code === Code.NotFound,
  );
});

test("a webhook whose URL is not http(s) is refused naming the field", async () => {
  const htk = createHtkClient({ url, token: required("HTK_WEBHOOKS_TOKEN") });
  await assert.rejects(htk.webhooks.createWebhook({ url: "ftp://127.0.0.1/htk", events: ["*"] }), namesField("url"));
});

test("webhooks need the scope webhooks:manage", async () => {
  // The token that drives processes has no business reading where events go.
  const htk = createHtkClient({ url, token });
  await assert.rejects(
    htk.webhooks.listWebhooks({}),
    (error) => error instanceof ConnectError && error.code === Code.PermissionDenied,
  );
});

test("a trust policy is created, listed and deleted", async () => {
  const htk = createHtkClient({ url, token: required("HTK_TRUST_TOKEN") });
  const name = uniqueName("ts client main");
  const created = await htk.trust.createTrustPolicy({
    name,
    issuer: "https://token.actions.githubusercontent.com",
    audience: "htk",
    subject: "repo:acme/app:ref:refs/heads/main",
    claims: { repository_owner: "acme" },
    scopes: ["processes:write"],
    tokenTtlSeconds: 300,
  });
  assert.deepEqual(
    [created.name, created.tokenTtlSeconds, created.claims, created.scopes],
    [name, 300, { repository_owner: "acme" }, ["processes:write"]],
  );

  const { policies } = await htk.trust.listTrustPolicies({});
  assert.ok(policies.some((policy) => policy.policyId === created.policyId), "the list holds the policy");

  const deleted = await htk.trust.deleteTrustPolicy({ policyId: created.policyId });
  assert.equal(deleted.revokedTokens, 0, "a policy never exchanged revokes no token");
  await assert.rejects(
    htk.trust.deleteTrustPolicy({ policyId: created.policyId }),
    (error) => error instanceof ConnectError && error.code === Code.NotFound,
  );
});

test("a trust policy for an issuer without TLS is refused naming the field", async () => {
  const htk = createHtkClient({ url, token: required("HTK_TRUST_TOKEN") });
  await assert.rejects(
    htk.trust.createTrustPolicy({
      name: uniqueName("ts client"),
      issuer: "http://ci.example.com",
      audience: "htk",
      subject: "repo:acme/app:*",
    }),
    namesField("issuer"),
  );
});
