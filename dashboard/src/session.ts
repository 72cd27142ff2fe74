// Who is signed in, and how calls and streams fail: a refused token ends the
// session (back to sign-in), a refused stream stops with the API's reason,
// and a broken one is resumed after a pause.
import { Code, ConnectError, createHtkClient, type Caller, type HtkClient } from "@htk/client/web";

// sessionStorage: the tab keeps the token across reloads, nothing else ever
// sees it (no URL, no cookie), and closing the tab forgets it.
const TOKEN_KEY = "htk.token";
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 8000;

export interface Session {
  readonly htk: HtkClient;
  readonly caller: Caller;
  /** Whether the token may approve and reject tasks. */
  readonly mayCompleteTasks: boolean;
}

/** Thrown once the session has ended, so that whatever was running stops quietly. */
export class SessionEnded extends Error {}

type SignOut = (message: string) => void;
let signOut: SignOut = () => {};

export function onSignOut(handler: SignOut): void {
  signOut = handler;
}

export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Asks the API who `token` is; stores it only once the API accepted it. */
export async function signIn(token: string): Promise<Session> {
  const htk = createHtkClient({ url: location.origin, token });
  const caller = await htk.processes.getCaller({});
  sessionStorage.setItem(TOKEN_KEY, token);
  return { htk, caller, mayCompleteTasks: caller.scopes.includes("tasks:complete") };
}

export const REFUSED_MESSAGE = "The API refused the token (revoked, expired or mistyped). Sign in again.";

/** Whether the API lost the token (then the session ends at once). */
export function refusesToken(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Unauthenticated;
}

/** Whether `error` means the token is no good; then ends the session. */
function endsSession(error: unknown): boolean {
  if (refusesToken(error)) {
    signOut(REFUSED_MESSAGE);
    return true;
  }
  return false;
}

/** A call's result; a refused token ends the session (and throws SessionEnded). */
export async function call<T>(request: Promise<T>): Promise<T> {
  try {
    return await request;
  } catch (error) {
    if (endsSession(error)) throw new SessionEnded();
    throw error;
  }
}

/** Why signing in with a token failed, in words. */
export function signInProblem(error: unknown): string {
  return refusesToken(error)
    ? REFUSED_MESSAGE
    : `Could not sign in: ${describe(error)}`;
}

/** What a view shows of a call that failed. */
export function describe(error: unknown): string {
  return error instanceof ConnectError ? error.rawMessage : String(error);
}

/**
 * A stream's in-band error message (a google.rpc.Status, the last message of
 * a stream that failed after it began) as the error it stands for.
 */
export function inBandError(status: { code: number; message: string }): ConnectError {
  return new ConnectError(status.message, status.code as Code);
}

// What opening the stream again cannot mend: the request itself is wrong (a
// filter, a process that is not there) or not the caller's to make.
const REFUSALS = new Set([Code.InvalidArgument, Code.NotFound, Code.PermissionDenied]);

export type StreamState = "connecting" | "live" | "reconnecting" | "finished" | "refused";

export interface Follow<M> {
  /** Opens the stream, from wherever the view has got to. */
  open(signal: AbortSignal): AsyncIterable<M>;
  /** Takes one message; returns an error to end this stream (inBandError for the API's). */
  receive(message: M): Error | void;
  state(state: StreamState): void;
  /** Whether a stream that ended by itself is over (true) or broken (false). */
  finished(): boolean;
  /** The API refused the stream for good: shows its reason, which names the field. */
  refused(reason: string): void;
}

/**
 * Follows a stream until `signal` aborts. A refused token ends the session,
 * and a refused request (REFUSALS) stops the stream with the API's reason;
 * every other break (the API or the network unavailable, an end that is not
 * the finish) shows `reconnecting` and opens it again after a pause that
 * grows to RETRY_MAX_MS.
 */
export async function follow<M>(signal: AbortSignal, stream: Follow<M>): Promise<void> {
  let pause = RETRY_FIRST_MS;
  stream.state("connecting");
  while (!signal.aborted) {
    try {
      let first = true;
      for await (const message of stream.open(signal)) {
        if (first) {
          stream.state("live");
          pause = RETRY_FIRST_MS;
          first = false;
        }
        const broken = stream.receive(message);
        if (broken) throw broken;
      }
      if (stream.finished()) {
        stream.state("finished");
        return;
      }
    } catch (error) {
      if (signal.aborted || error instanceof SessionEnded || endsSession(error)) return;
      if (error instanceof ConnectError && REFUSALS.has(error.code)) {
        stream.state("refused");
        stream.refused(describe(error));
        return;
      }
    }
    stream.state("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, RETRY_MAX_MS);
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
 * `changed()` on every message, the first one included, since the API's way
 * to miss nothing is to read again once the stream answers, and after every
 * reconnection. The views read once on opening too, so that what they show
 * never waits on the stream; `refused(reason)` if the API refuses it.
 */
export function followChanges(
  session: Session,
  filters: { status?: string; namespace?: string },
  signal: AbortSignal,
  setState: (state: StreamState) => void,
  changed: () => void,
  refused: (reason: string) => void,
): void {
  void follow(signal, {
    open: (abort) => session.htk.processes.watchProcesses(filters, { signal: abort }),
    receive: (message) => {
      if (message.error) return inBandError(message.error);
      changed();
    },
    state: setState,
    finished: () => false,
    refused,
  });
}
