// Who is signed in, and how calls and streams fail: a refused token ends the
// session (back to sign-in), a broken stream is resumed after a pause.
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

/** Whether `error` means the token is no good; then ends the session. */
function endsSession(error: unknown): boolean {
  if (error instanceof ConnectError && error.code === Code.Unauthenticated) {
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
  return error instanceof ConnectError && error.code === Code.Unauthenticated
    ? REFUSED_MESSAGE
    : `Could not sign in: ${describe(error)}`;
}

/** What a view shows of a call that failed. */
export function describe(error: unknown): string {
  return error instanceof ConnectError ? error.rawMessage : String(error);
}

export type StreamState = "connecting" | "live" | "reconnecting" | "finished";

export interface Follow<M> {
  /** Opens the stream, from wherever the view has got to. */
  open(signal: AbortSignal): AsyncIterable<M>;
  /** Takes one message; returns an error to end this stream as broken. */
  receive(message: M): Error | void;
  state(state: StreamState): void;
  /** Whether a stream that ended by itself is over (true) or broken (false). */
  finished(): boolean;
}

/**
 * Follows a stream until `signal` aborts: every break (an error, an in-band
 * error message, an end that is not the finish) shows `reconnecting` and
 * opens it again after a pause that grows to RETRY_MAX_MS.
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
 * reconnection.
 */
export function followChanges(
  session: Session,
  filters: { status?: string; namespace?: string },
  signal: AbortSignal,
  setState: (state: StreamState) => void,
  changed: () => void,
): void {
  void follow(signal, {
    open: (abort) => session.htk.processes.watchProcesses(filters, { signal: abort }),
    receive: (message) => {
      if (message.error) return new Error(message.error.message);
      changed();
    },
    state: setState,
    finished: () => false,
  });
}
