// What the Node and browser entry points share: the services, their messages
// and the bearer token. Only the transport differs between them.
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";

import { ProcessService } from "./gen/htk/processes/v1/process_service_pb.js";
import { TaskService } from "./gen/htk/processes/v1/task_service_pb.js";
import { TrustService } from "./gen/htk/processes/v1/trust_service_pb.js";
import { WebhookService } from "./gen/htk/processes/v1/webhook_service_pb.js";
import { type WatchOptions, watchProcess, watchProcesses } from "./watch.js";

// Errors are ConnectErrors with a gRPC status code: callers need both to tell them apart.
export { Code, ConnectError } from "@connectrpc/connect";
export * from "./gen/htk/processes/v1/process_service_pb.js";
export * from "./gen/htk/processes/v1/task_service_pb.js";
export * from "./gen/htk/processes/v1/trust_service_pb.js";
export * from "./gen/htk/processes/v1/webhook_service_pb.js";
export * from "./watch.js";

/** htk's services, by the name each has on an HtkClient. */
const services = {
  processes: ProcessService,
  tasks: TaskService,
  webhooks: WebhookService,
  trust: TrustService,
} as const;

/** The generated clients of htk's services, sharing one transport. */
export type HtkClient = {
  readonly [name in keyof typeof services]: Client<(typeof services)[name]>;
} & {
  /** The transport the clients share, for calling through it directly. */
  readonly transport: Transport;
  /**
   * Follows one process until it finishes, reconnecting after a break and
   * resuming after the last event delivered (see `watchProcess`).
   */
  watch(request: Parameters<typeof watchProcess>[1], options?: WatchOptions): ReturnType<typeof watchProcess>;
  /** Follows the organization's changes, reconnecting after a break (see `watchProcesses`). */
  watchChanges(
    request: Parameters<typeof watchProcesses>[1],
    options?: WatchOptions,
  ): ReturnType<typeof watchProcesses>;
};

/** Where htk is and who calls it. */
export interface HtkClientOptions {
  /** htk's HTTP address, e.g. `http://localhost:8080` (gRPC shares its port). */
  url: string;
  /** An htk API token (`htk token create`), sent as `Authorization: Bearer <token>`. */
  token: string;
}

/** Sends `authorization: Bearer <token>` with every call. */
export function bearerToken(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

/** The service clients over `transport`, which must carry the token itself. */
export function clientsOver(transport: Transport): HtkClient {
  const clients = Object.fromEntries(
    Object.entries(services).map(([name, service]) => [name, createClient(service, transport)]),
  );
  const processes = clients.processes as HtkClient["processes"];
  return {
    ...clients,
    transport,
    watch: (request, options) => watchProcess(processes, request, options),
    watchChanges: (request, options) => watchProcesses(processes, request, options),
  } as HtkClient;
}
