// Following a stream through breaks, so that no caller writes that loop: a
// server restarting, a worker killed, the network lost. A process's watch
// resumes after the last event it delivered (`after_seq`), so each event
// arrives exactly once; the organization's changes, which replay nothing,
// say when they are live again so that the caller reads again.
import { Code, type Client, ConnectError } from "@connectrpc/connect";

import type {
  ProcessService,
  WatchProcessesRequest,
  WatchProcessesResponse,
  WatchProcessResponse,
} from "./gen/htk/processes/v1/process_service_pb.js";

/** Where a followed stream stands, for a caller that shows it. */
export type WatchState = "connecting" | "live" | "reconnecting";

/** How a watch follows its stream through breaks. */
export interface WatchOptions {
  /** Ends the watch: the iteration then stops without an error. */
  signal?: AbortSignal;
  /** Told each time the stream connects, answers, or breaks and waits to reconnect. */
  onState?: (state: WatchState) => void;
  /** The pause before the first reconnection; it doubles after each failed one. Default 1000. */
  firstDelayMs?: number;
  /** The longest pause between reconnections. Default 8000. */
  maxDelayMs?: number;
  /**
   * How many reconnections in a row may fail (without a message) before the
   * watch gives up and throws the last error. Default 10 (about a minute);
   * `Infinity` follows for as long as the caller wants.
   */
  attempts?: number;
}

/** What a process's watch delivers: its snapshot (only when not resuming) and its events. */
export type WatchedProcess = WatchProcessResponse & { kind: { case: "process" | "event" } };

/** What the organization's watch delivers: its changes (`process`, `event`). */
export type WatchedChange = WatchProcessesResponse;

// The types of the events that finish a process, after which its stream ends.
const FINISHING_EVENTS = new Set(["completed", "failed", "cancelled"]);

// What opening the stream again cannot mend: the request is wrong (a filter,
// a process that is not there), or not the caller's to make, or the token is
// no good. Everything else (unavailable, overloaded, cut) is worth a retry.
const REFUSALS = new Set([
  Code.InvalidArgument,
  Code.NotFound,
  Code.PermissionDenied,
  Code.Unauthenticated,
  Code.FailedPrecondition,
  Code.Unimplemented,
]);

/** Whether a watch gives up on `error` at once instead of reconnecting. */
export function refusesWatch(error: unknown): boolean {
  return error instanceof ConnectError && REFUSALS.has(error.code);
}

/**
 * A stream's in-band error (the `error` message, a google.rpc.Status, that
 * ends a stream which failed after it began) as the error it stands for.
 */
export function inBandError(status: { code: number; message: string }): ConnectError {
  return new ConnectError(status.message, status.code as Code);
}

/** One connection's messages; `undefined` from `take` skips a message, an Error ends the connection. */
interface Connection<M, Out> {
  open(signal: AbortSignal): AsyncIterable<M>;
  take(message: M): Out | Error | undefined;
  /** Whether a stream that ended by itself is over (true) or broken (false). */
  finished(): boolean;
}

async function* reconnecting<M, Out>(connection: Connection<M, Out>, options: WatchOptions): AsyncGenerator<Out> {
  const { signal, onState = () => {}, firstDelayMs = 1000, maxDelayMs = 8000, attempts = 10 } = options;
  let pause = firstDelayMs;
  let failures = 0;
  onState("connecting");
  for (;;) {
    // Each connection has its own abort, so that leaving the loop (a caller's
    // `break`, an error) closes the stream it was reading.
    const abort = new AbortController();
    const stop = () => abort.abort();
    signal?.addEventListener("abort", stop);
    let answered = false;
    let failure: unknown;
    try {
      for await (const message of connection.open(abort.signal)) {
        if (!answered) {
          answered = true;
          failures = 0;
          pause = firstDelayMs;
          onState("live");
        }
        const taken = connection.take(message);
        if (taken instanceof Error) throw taken;
        if (taken !== undefined) yield taken;
        // Whatever follows the finish (an error on its way) changes nothing.
        if (connection.finished()) return;
      }
      if (connection.finished()) return;
    } catch (error) {
      if (signal?.aborted) return;
      if (refusesWatch(error)) throw error;
      failure = error;
    } finally {
      signal?.removeEventListener("abort", stop);
      abort.abort();
    }
    if (signal?.aborted) return;
    failures += answered ? 0 : 1;
    if (failures >= attempts) {
      throw failure ?? new ConnectError("the watch stream keeps ending without a message", Code.Unavailable);
    }
    onState("reconnecting");
    await sleep(pause, signal);
    if (signal?.aborted) return;
    pause = Math.min(pause * 2, maxDelayMs);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done);
  });
}

/**
 * Follows one process until it finishes, through breaks: after one it
 * watches again from the last `seq` delivered, so every event arrives once,
 * in order. The snapshot (the whole process) comes first unless `afterSeq`
 * is given (or the process has finished with no event after it: then the
 * snapshot alone); heartbeats are not delivered. Throws the API's error when the
 * watch is refused (a process that is not there, a bad `afterSeq`, a token
 * refused), or the last one once `attempts` reconnections failed in a row.
 */
export function watchProcess(
  processes: Client<typeof ProcessService>,
  request: { processId: string; afterSeq?: number },
  options: WatchOptions = {},
): AsyncIterable<WatchedProcess> {
  let afterSeq = request.afterSeq;
  let finished = false;
  return reconnecting<WatchProcessResponse, WatchedProcess>(
    {
      open: (signal) => processes.watchProcess({ processId: request.processId, afterSeq }, { signal }),
      take: (message) => {
        const { kind } = message;
        switch (kind.case) {
          case "process":
            afterSeq = kind.value.seq;
            finished = kind.value.status !== "running";
            return message as WatchedProcess;
          case "event":
            // After a resumption the server starts after `afterSeq`; this
            // guard keeps the promise even against a server that did not.
            if (afterSeq !== undefined && kind.value.seq <= afterSeq) return undefined;
            afterSeq = kind.value.seq;
            finished = FINISHING_EVENTS.has(kind.value.type);
            return message as WatchedProcess;
          case "error":
            return inBandError(kind.value);
          default:
            return undefined;
        }
      },
      finished: () => finished,
    },
    options,
  );
}

/**
 * Follows the organization's changes that match `request`, through breaks,
 * until `options.signal` aborts. The stream replays nothing, so a caller
 * that must miss nothing reads again (ListProcesses) on each `live` state:
 * the API answers first once it receives changes. Heartbeats are not
 * delivered.
 */
export function watchProcesses(
  processes: Client<typeof ProcessService>,
  request: Partial<Pick<WatchProcessesRequest, "status" | "namespace">>,
  options: WatchOptions = {},
): AsyncIterable<WatchedChange> {
  return reconnecting<WatchProcessesResponse, WatchedChange>(
    {
      open: (signal) => processes.watchProcesses(request, { signal }),
      take: (message) => {
        if (message.error) return inBandError(message.error);
        return message.heartbeat ? undefined : message;
      },
      finished: () => false,
    },
    options,
  );
}
