// htk's dashboard: sign in with a token, then the processes, one process, or
// the tasks (open or decided), as the address's fragment says (#/,
// #/processes/<id>, #/tasks, #/tasks/decided): the server serves one page, and the fragment never leaves the tab.
import "./style.css";

import { h, setTitle } from "./dom.js";
import { onSignOut, refusesToken, signInProblem } from "./errors.js";
import { followOpenTasks, notifyButton, notifyOf } from "./header.js";
import { processView } from "./process.js";
import { processesView } from "./processes.js";
import type { StreamState } from "./streams.js";
import { decidedView, inboxView } from "./tasks.js";
import { endSignIn, finishSignIn, providerName, startSignIn } from "./sso.js";
import { forgetToken, type Session, signIn, storedToken } from "./token.js";
import { deliveriesView, webhooksView } from "./webhooks.js";

const STATE_TEXT: Record<StreamState, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  finished: "Finished",
  refused: "Not live",
};

const app = document.getElementById("app")!;
let session: Session | undefined;
let leaving: AbortController | undefined;

function showSignIn(message = ""): void {
  leaving?.abort();
  session = undefined;
  setTitle("Sign in");
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert" }, message);
  const form = h(
    "form",
    { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in to htk"),
    h("p", {}, "Paste an API token (", h("code", {}, "htk token create"), "). This tab keeps it until it closes."),
    h("label", { for: "token" }, "API token"),
    input,
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      session = await signIn(input.value.trim());
      route();
    } catch (failure) {
      error.textContent = signInProblem(failure);
    }
  });
  const main = h("main", { id: "main" }, form);
  app.replaceChildren(main);
  input.focus();
  void providerName().then((name) => {
    if (!name || !main.isConnected) return;
    const button = h("button", { type: "button", class: "provider" }, `Sign in with ${name}`);
    button.addEventListener("click", () => {
      startSignIn().catch((failure: unknown) => (error.textContent = String((failure as Error).message)));
    });
    form.before(h("section", { class: "sign-in", "aria-label": "Single sign-on" }, button));
  });
}

function route(): void {
  if (!session) return;
  leaving?.abort();
  leaving = new AbortController();
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const state = h("span", { class: "stream-state", role: "status", "data-state": "connecting" }, STATE_TEXT.connecting);
  const setState = (next: StreamState) => {
    state.dataset.state = next;
    state.textContent = STATE_TEXT[next];
  };
  const main = h("main", { id: "main", tabindex: -1 });
  const signOut = h("button", { type: "button", class: "link" }, "Sign out");
  signOut.addEventListener("click", async () => {
    const token = storedToken();
    forgetToken();
    if (token) await endSignIn(token);
    showSignIn("Signed out.");
  });
  const openTasks = h("span", { class: "badge", hidden: true });
  followOpenTasks(session, openTasks, leaving.signal, notifyOf);
  const current = (href: string) => (path === href || (href === "/" && path === "") ? "page" : undefined);
  app.replaceChildren(
    h("a", { class: "skip", href: "#main", onclick: (event: Event) => (event.preventDefault(), main.focus()) }, "Skip to content"),
    h(
      "header",
      { class: "top" },
      h(
        "nav",
        { "aria-label": "Dashboard" },
        h("a", { href: "#/", "aria-current": current("/") }, "Processes"),
        h("a", { href: "#/tasks", "aria-current": current("/tasks") ?? current("/tasks/decided") }, "Tasks ", openTasks),
        h("a", { href: "#/webhooks", "aria-current": current("/webhooks") }, "Webhooks"),
      ),
      h(
        "p",
        { class: "who" },
        state,
        notifyButton(),
        h("span", {}, "Organization ", h("strong", { class: "org" }, session.caller.organization)),
        h("span", {}, "Token ", h("strong", { class: "token-name" }, session.caller.tokenName || "(unnamed)")),
        signOut,
      ),
    ),
    main,
  );
  const opened = /^\/processes\/([^/]+)$/.exec(path ?? "");
  const processId = opened && decoded(opened[1]!);
  if (processId) {
    processView(session, main, processId, leaving.signal, setState);
  } else if (opened) {
    setState("refused");
    setTitle("No such process");
    main.replaceChildren(
      h("h1", {}, "No such process"),
      h("p", { class: "error", role: "alert" }, "The address names no process: its process ID is not valid percent-encoding."),
      h("p", {}, h("a", { href: "#/" }, "← All processes")),
    );
  } else if (path === "/webhooks") {
    webhooksView(session, main, setState);
  } else if (/^\/webhooks\/[^/]+$/.test(path ?? "")) {
    deliveriesView(session, main, decoded(path!.split("/")[2]!) ?? "", setState);
  } else if (path === "/tasks/decided") {
    decidedView(session, main, new URLSearchParams(query), leaving.signal, setState);
  } else if (path === "/tasks") {
    inboxView(session, main, new URLSearchParams(query), leaving.signal, setState);
  } else {
    processesView(session, main, new URLSearchParams(query), leaving.signal, setState);
  }
}

/** A path segment percent-decoded, or undefined if it is not valid percent-encoding. */
function decoded(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

onSignOut((message) => {
  forgetToken();
  showSignIn(message);
});
window.addEventListener("hashchange", route);

/** Signs in with the token the provider's sign-in gave, else the tab's. */
async function start(): Promise<void> {
  let token: string | null;
  try {
    token = (await finishSignIn()) ?? storedToken();
  } catch (failure) {
    showSignIn((failure as Error).message);
    return;
  }
  if (!token) {
    showSignIn();
    return;
  }
  signIn(token).then(
    (signedIn) => {
      session = signedIn;
      route();
    },
    (failure) => {
      // Only a refused token is forgotten: after a network error, reloading
      // the tab tries the same token again.
      if (refusesToken(failure)) {
        forgetToken();
        showSignIn(signInProblem(failure));
      } else {
        showSignIn(`${signInProblem(failure)} (reload the page to try again)`);
      }
    },
  );
}

void start();
