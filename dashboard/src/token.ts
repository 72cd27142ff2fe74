// The signed-in token: kept for the tab, and the session the API grants it.
import { type Caller, createHtkClient, type HtkClient } from "@htk/client/web";

// sessionStorage: the tab keeps the token across reloads, nothing else ever
// sees it (no URL, no cookie), and closing the tab forgets it.
const TOKEN_KEY = "htk.token";

export interface Session {
  readonly htk: HtkClient;
  readonly caller: Caller;
  /** Whether the token may approve and reject tasks. */
  readonly mayCompleteTasks: boolean;
  /** Whether the token may cancel processes. */
  readonly mayWriteProcesses: boolean;
  /** Whether the token may see and manage webhooks. */
  readonly mayManageWebhooks: boolean;
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
  return {
    htk,
    caller,
    mayCompleteTasks: caller.scopes.includes("tasks:complete"),
    mayWriteProcesses: caller.scopes.includes("processes:write"),
    mayManageWebhooks: caller.scopes.includes("webhooks:manage"),
  };
}
