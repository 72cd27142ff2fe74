/**
 * The TypeScript client of the htk process-tracking API, for Node: the
 * clients generated from htk's protos, over native gRPC (HTTP/2) through
 * Envoy, with the bearer token on every call.
 *
 * ```ts
 * const htk = createHtkClient({ url: "http://localhost:8080", token: process.env.HTK_TOKEN! });
 * const page = await htk.processes.listProcesses({ status: "running" });
 * ```
 *
 * Errors are `ConnectError`s whose `code` is the gRPC status (`Code.NotFound`,
 * `Code.InvalidArgument`, ...), as each RPC's comment in the protos lists.
 * Browsers use `@htk/client/web` (gRPC-Web) instead.
 * @module
 */
import { createGrpcTransport } from "@connectrpc/connect-node";

import { bearerToken, clientsOver, type HtkClient, type HtkClientOptions } from "./clients.js";

export * from "./clients.js";

/** The service clients of the htk at `url`, over native gRPC. */
export function createHtkClient({ url, token }: HtkClientOptions): HtkClient {
  return clientsOver(createGrpcTransport({ baseUrl: url, interceptors: [bearerToken(token)] }));
}
