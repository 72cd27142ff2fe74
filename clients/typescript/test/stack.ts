// The htk these tests call: HTK_URL, HTK_TOKEN (a token with the scopes
// processes:write and tasks:complete) and HTK_APPROVER_TOKEN (another, with
// tasks:complete) name it, and HTK_READ_ONLY_TOKEN, when set, a token of the
// same organization without scopes. The tests of webhooks and trust policies
// need two more of that organization, HTK_WEBHOOKS_TOKEN (webhooks:manage)
// and HTK_TRUST_TOKEN (tokens:manage). `make test` starts a stack and sets
// them (tests/e2e/test_clients.py).
import { randomBytes } from "node:crypto";

import { createHtkClient } from "@htk/client";
import { createHtkClient as createWebClient } from "@htk/client/web";

/** The environment variable `name`, which the tests that read it cannot run without. */
export function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `set the variables test/stack.ts lists (HTK_URL, HTK_TOKEN, ...) to run these tests against a running htk; ${name} is missing`,
    );
  }
  return value;
}

export const url = required("HTK_URL");
export const token = required("HTK_TOKEN");
/** A person's token (tasks:complete): the one that drives a process may not approve its gates. */
export const approverToken = required("HTK_APPROVER_TOKEN");
export const readOnlyToken = process.env.HTK_READ_ONLY_TOKEN;

/** A name no other test run uses, so lists can be filtered down to one test's processes. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString("hex")}`;
}

/** The client over each transport it offers, by the transport's name. */
export const transports = {
  "gRPC (Node)": createHtkClient,
  "gRPC-Web (browsers)": createWebClient,
};
