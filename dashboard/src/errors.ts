// How calls fail, in the dashboard's terms: a refused token ends the session
// (back to sign-in), and every other failure is shown in words.
import { Code, ConnectError } from "@htk/client/web";

/** Thrown once the session has ended, so that whatever was running stops quietly. */
export class SessionEnded extends Error {}

type SignOut = (message: string) => void;
let signOut: SignOut = () => {};

export function onSignOut(handler: SignOut): void {
  signOut = handler;
}

export const REFUSED_MESSAGE = "The API refused the token (revoked, expired or mistyped). Sign in again.";

/** Whether the API lost the token (then the session ends at once). */
export function refusesToken(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Unauthenticated;
}

/** Whether `error` means the token is no good; then ends the session. */
export function endsSession(error: unknown): boolean {
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
