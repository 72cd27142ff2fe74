// Following the API's streams in a view: the client library's watches
// reconnect and resume by themselves; a view only shows where a stream
// stands, and a refused one stops with the API's reason, or, when the token
// was refused, ends the session.
import type { WatchOptions, WatchState } from "@htk/client/web";

import { describe, endsSession } from "./errors.js";
import type { Session } from "./token.js";

export type StreamState = WatchState | "finished" | "refused";

/**
 * Reads `watch` until `signal` aborts or the watch ends by itself (then the
 * state is `finished`). It reconnects after every break for as long as the
 * view is open; a refused token ends the session, and any other refusal
 * shows `refused` and its reason, which names the field.
 */
export async function follow<M>(
  signal: AbortSignal,
  watch: (options: WatchOptions) => AsyncIterable<M>,
  setState: (state: StreamState) => void,
  receive: (message: M) => void,
  refused: (reason: string) => void,
): Promise<void> {
  try {
    for await (const message of watch({ signal, onState: setState, attempts: Infinity })) receive(message);
    if (!signal.aborted) setState("finished");
  } catch (error) {
    if (signal.aborted || endsSession(error)) return;
    setState("refused");
    refused(describe(error));
  }
}

/**
 * `action`, run once `delayMs` after the first of a burst of calls (a
 * pipeline's updates come in bursts), and never after `signal` aborts.
 */
export function coalesced(action: () => void, delayMs: number, signal: AbortSignal): () => void {
  let pending: ReturnType<typeof setTimeout> | undefined;
  signal.addEventListener("abort", () => clearTimeout(pending));
  return () => {
    pending ??= setTimeout(() => {
      pending = undefined;
      action();
    }, delayMs);
  };
}

/**
 * Follows the organization's changes (WatchProcesses) that match `filters`:
 * `changed()` on every change, and each time the stream is live again, since
 * the API's way to miss nothing is to read again once the stream answers.
 * The views read once on opening too, so that what they show never waits on
 * the stream; `refused(reason)` if the API refuses it.
 */
export function followChanges(
  session: Session,
  filters: { status?: string; namespace?: string },
  signal: AbortSignal,
  setState: (state: StreamState) => void,
  changed: () => void,
  refused: (reason: string) => void,
): void {
  const showing = (state: StreamState) => {
    setState(state);
    if (state === "live") changed();
  };
  void follow(signal, (options) => session.htk.watchChanges(filters, options), showing, changed, refused);
}
