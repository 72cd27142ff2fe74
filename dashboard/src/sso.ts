// Signing in with the organization's identity provider (docs/identity.md),
// when the server has one (HTK_OIDC_ISSUER). The server runs the code flow
// with PKCE and holds the client secret; the page only goes to the
// provider's URL the server gives and, back here with `code` and `state`,
// hands them to the server for a token, which it then keeps as it keeps a
// pasted one. These calls need no token: plain REST, no gRPC-Web client.

// sessionStorage, as the token: whether this tab's token came from a
// sign-in, which signing out ends (a pasted token is the person's to keep).
const SIGNED_IN_KEY = "htk.signed-in-with-provider";
// sessionStorage: the `state` of the sign-in this tab started. The server
// would finish any sign-in it started, so only this ties the code coming
// back to this tab: without it, a link carrying someone else's code and
// state would sign this tab in as them (login CSRF).
const STATE_KEY = "htk.sign-in-state";

/** This page, where the provider sends the browser back to. */
function here(): string {
  return location.origin + location.pathname;
}

async function call(path: string, body?: object): Promise<Record<string, unknown>> {
  const response = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = (await response.json().catch(() => ({}))) as Record<string, unknown>;
  if (!response.ok) throw new Error(String(answer["message"] ?? `HTTP ${response.status}`));
  return answer;
}

/** The provider's name, if people can sign in with one here. */
export async function providerName(): Promise<string | undefined> {
  try {
    const shown = await call("/api/v1/sign-in/provider");
    return shown["enabled"] ? String(shown["name"]) : undefined;
  } catch {
    return undefined; // pasting a token still works
  }
}

/** Goes to the provider's sign-in page. */
export async function startSignIn(): Promise<void> {
  const started = await call("/api/v1/sign-in:start", { redirect_uri: here() });
  const url = String(started["authorization_url"]);
  sessionStorage.setItem(STATE_KEY, new URL(url).searchParams.get("state") ?? "");
  location.assign(url);
}

/**
 * Back from the provider: the token for the person who signed in, or
 * undefined if this page was not opened by the provider. The code and state
 * leave the address at once, so a reload does not send them again.
 */
export async function finishSignIn(): Promise<string | undefined> {
  const query = new URLSearchParams(location.search);
  const code = query.get("code");
  const state = query.get("state");
  const refused = query.get("error_description") ?? query.get("error");
  if (!code && !refused) return undefined;
  history.replaceState(null, "", here() + location.hash);
  const started = sessionStorage.getItem(STATE_KEY);
  sessionStorage.removeItem(STATE_KEY);
  if (refused) throw new Error(`The identity provider refused the sign-in: ${refused}`);
  if (!state || state !== started) {
    throw new Error("This sign-in was not started in this tab; sign in again.");
  }
  const finished = await call("/api/v1/sign-in:finish", { code, state, redirect_uri: here() });
  sessionStorage.setItem(SIGNED_IN_KEY, "1");
  return String(finished["token"]);
}

/** Ends a session that signing in began: the server revokes its token. */
export async function endSignIn(token: string): Promise<void> {
  if (!sessionStorage.getItem(SIGNED_IN_KEY)) return;
  sessionStorage.removeItem(SIGNED_IN_KEY);
  await call("/api/v1/sign-out", { token }).catch(() => undefined); // gone already: as good
}
