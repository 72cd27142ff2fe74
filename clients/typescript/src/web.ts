/**
 * The TypeScript client of the htk process-tracking API, for browsers: the
 * same clients as `@htk/client`, over gRPC-Web (`fetch`), which Envoy
 * translates to gRPC. Server streams work; errors are the same
 * `ConnectError`s.
 * @module
 */
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { bearerToken, clientsOver, type HtkClient, type HtkClientOptions } from "./clients.js";

export * from "./clients.js";

/** The service clients of the htk at `url`, over gRPC-Web. */
export function createHtkClient({ url, token }: HtkClientOptions): HtkClient {
  return clientsOver(createGrpcWebTransport({ baseUrl: url, interceptors: [bearerToken(token)] }));
}
