// Human steps' tasks: what each shows, the Approve and Reject controls, and
// the inbox of open tasks across processes.
import type { Task } from "@htk/client/web";

import { ago, chip, h, keepingFocus, millis, problemsIn, prose, setTitle } from "./dom.js";
import { call, describe } from "./errors.js";
import { offsetOf, showPage } from "./pages.js";
import { coalesced, followChanges, type StreamState } from "./streams.js";
import type { Session } from "./token.js";

const INBOX_SIZE = 100;
const DECIDED_SIZE = 50;
const REFRESH_DELAY_MS = 150;

/** A task's state in words: who decided it, with what outcome and comment. */
export function taskSummary(task: Task): HTMLElement {
  const parts: (string | HTMLElement)[] = [chip(task.status), " "];
  if (task.status === "completed") {
    parts.push(h("strong", {}, task.outcome ?? ""), ` by ${task.completedBy ?? "?"} `, ago(millis(task.completedAt)));
    if (task.comment) parts.push(": ", prose("q", "comment", task.comment));
  } else if (task.status === "open") {
    parts.push("waiting for a person since ", ago(millis(task.openedAt)));
  } else if (task.status === "pending") {
    parts.push("opens when its step starts");
  } else if (task.status === "expired") {
    parts.push("its step timed out before anyone decided");
  } else if (task.status === "cancelled") {
    parts.push("its step or process ended without a decision");
  }
  return h("p", { class: "task-summary" }, ...parts);
}

/**
 * Approve and Reject with a comment, for an open task and a token that may
 * complete it. Forms are kept per task across re-renders (`forms`), so a live
 * update never drops a comment being typed or the keyboard focus.
 */
export function taskActions(
  session: Session,
  task: Task,
  forms: Map<string, HTMLElement>,
  done: () => void,
): HTMLElement | null {
  if (task.status !== "open" || !session.mayCompleteTasks) return null;
  const kept = forms.get(task.taskId);
  if (kept) return kept;
  const id = `comment-${task.taskId}`;
  const comment = h("textarea", { id, name: "comment", rows: 2, maxlength: 10000 });
  const message = h("p", { class: "error", role: "alert" });
  const decide = async (outcome: "approved" | "rejected") => {
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    try {
      const text = comment.value.trim();
      await call(session.htk.tasks.completeTask({ taskId: task.taskId, outcome, comment: text || undefined }));
      forms.delete(task.taskId);
      done();
    } catch (failure) {
      message.textContent = `Could not complete the task: ${describe(failure)}`;
      for (const button of form.querySelectorAll("button")) button.disabled = false;
    }
  };
  // Rejecting fails the step, often the whole run: it takes a second click,
  // with the comment focused so that the reason is one keystroke away.
  const asking = h("p", { class: "confirm", id: `confirm-${task.taskId}`, role: "status" });
  const approve = h("button", { type: "submit", class: "approve" }, "Approve");
  const reject = h("button", { type: "button", class: "reject" }, "Reject");
  const confirm = h("button", { type: "button", class: "reject" }, "Confirm reject");
  const keep = h("button", { type: "button" }, "Keep open");
  const buttons = h("div", { class: "buttons" }, approve, reject);
  const confirming = (yes: boolean) => {
    keepingFocus(() => buttons.replaceChildren(...(yes ? [confirm, keep] : [approve, reject])));
    asking.textContent = yes ? "Reject this task? Its step fails. Say why in the comment, then confirm." : "";
    if (yes) comment.setAttribute("aria-describedby", asking.id);
    else comment.removeAttribute("aria-describedby");
  };
  reject.addEventListener("click", () => {
    confirming(true);
    comment.focus();
  });
  keep.addEventListener("click", () => {
    confirming(false);
    reject.focus();
  });
  confirm.addEventListener("click", () => void decide("rejected"));
  const form = h(
    "form",
    { class: "task-actions", "aria-label": `Decide ${task.label}` },
    h("label", { for: id }, "Comment (optional)"),
    comment,
    asking,
    buttons,
    message,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void decide("approved");
  });
  forms.set(task.taskId, form);
  return form;
}

/** The Tasks page's two views, each a link that survives a reload. */
export const OPEN_HREF = "#/tasks";
export const DECIDED_HREF = "#/tasks/decided";

function tabs(current: "open" | "decided"): HTMLElement {
  const tab = (href: string, name: "open" | "decided", text: string) =>
    h("a", { href, "aria-current": current === name ? "page" : undefined }, text);
  return h("nav", { class: "tabs", "aria-label": "Tasks" }, tab(OPEN_HREF, "open", "Open"), tab(DECIDED_HREF, "decided", "Decided"));
}

function taskCard(task: Task, ...more: (HTMLElement | null)[]): HTMLElement {
  return h(
    "li",
    { class: "task", "data-task-id": task.taskId },
    h("h2", {}, h("a", { href: `#/processes/${task.processId}` }, task.processName), " — ", task.label),
    h("p", { class: "meta" }, task.namespace),
    taskSummary(task),
    ...more,
  );
}

export function inboxView(
  session: Session,
  root: HTMLElement,
  query: URLSearchParams,
  signal: AbortSignal,
  setState: (state: StreamState) => void,
): void {
  const offset = offsetOf(query);
  const list = h("ol", { class: "inbox" });
  const count = h("p", { class: "count", role: "status" }, "Loading…");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const error = h("p", { class: "error", role: "alert" });
  const problem = problemsIn(error, "list", "stream");
  const forms = new Map<string, HTMLElement>();
  const note = h(
    "p",
    { class: "note" },
    session.mayCompleteTasks ? "" : "This token lacks the scope tasks:complete: it can see tasks but not decide them.",
  );
  setTitle("Tasks");
  root.replaceChildren(h("h1", {}, "Tasks waiting for a person"), tabs("open"), note, error, count, list, pager);

  const refresh = async () => {
    try {
      const page = await call(session.htk.tasks.listTasks({ status: "open", limit: INBOX_SIZE, offset }, { signal }));
      setTitle(`Tasks (${page.total} open)`);
      showPage(count, pager, { offset, shown: page.tasks.length, total: page.total }, {
        size: INBOX_SIZE,
        noun: "open tasks",
        none: "No task is waiting. Tasks open here when a run reaches a human step; decided ones are under Decided.",
        href: (to) => (to ? `${OPEN_HREF}?offset=${to}` : OPEN_HREF),
      });
      keepingFocus(() =>
        list.replaceChildren(...page.tasks.map((task) => taskCard(task, taskActions(session, task, forms, refreshSoon)))),
      );
      problem("list", "");
    } catch (failure) {
      if (!signal.aborted) problem("list", `Could not list tasks: ${describe(failure)}`);
    }
  };
  const refreshSoon = coalesced(() => void refresh(), REFRESH_DELAY_MS, signal);
  void refresh();
  followChanges(session, {}, signal, setState, refreshSoon, (reason) => problem("stream", `Not following changes: ${reason}`));
}

/** The ways a task can have ended, as the Decided view offers them. */
const ENDED: [string, string][] = [
  ["completed", "decided by a person"],
  ["expired", "expired"],
  ["cancelled", "cancelled"],
];

interface DecidedFilters {
  status: string;
  outcome: string;
  by: string;
  offset: number;
}

function decidedHref(filters: DecidedFilters): string {
  const query = new URLSearchParams();
  if (filters.status !== "completed") query.set("status", filters.status);
  if (filters.outcome) query.set("outcome", filters.outcome);
  if (filters.by) query.set("by", filters.by);
  if (filters.offset) query.set("offset", String(filters.offset));
  const text = query.toString();
  return text ? `${DECIDED_HREF}?${text}` : DECIDED_HREF;
}

/**
 * The tasks that are over, newest first: who approved or rejected what, and
 * which expired or were cancelled, filtered by outcome and by who decided.
 */
export function decidedView(
  session: Session,
  root: HTMLElement,
  query: URLSearchParams,
  signal: AbortSignal,
  setState: (state: StreamState) => void,
): void {
  const status = query.get("status") ?? "completed";
  const filters: DecidedFilters = {
    status: ENDED.some(([word]) => word === status) ? status : "completed",
    outcome: query.get("outcome") ?? "",
    by: query.get("by") ?? "",
    offset: offsetOf(query),
  };
  const options = (name: string, label: string, value: string, choices: [string, string][]) =>
    h("label", {}, label, h("select", { name }, ...choices.map(([word, text]) => h("option", { value: word, selected: word === value }, text))));
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter decided tasks" },
    options("status", "Ended", filters.status, ENDED),
    options("outcome", "Outcome", filters.outcome, [
      ["", "any"],
      ["approved", "approved"],
      ["rejected", "rejected"],
    ]),
    h("label", {}, "Decided by", h("input", { name: "by", value: filters.by, placeholder: "token name, e.g. alice" })),
    h("button", { type: "submit" }, "Apply"),
  );
  // Only a person's decision has an outcome and a decider: for tasks that
  // expired or were cancelled, those filters are off, and say so.
  const ended = form.querySelector<HTMLSelectElement>('select[name="status"]')!;
  const personal = () => {
    for (const field of form.querySelectorAll<HTMLInputElement | HTMLSelectElement>('[name="outcome"], [name="by"]')) {
      field.disabled = ended.value !== "completed";
    }
  };
  form.addEventListener("change", personal);
  personal();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const text = (name: string) => String(data.get(name) ?? "").trim();
    location.hash = decidedHref({ status: text("status"), outcome: text("outcome"), by: text("by"), offset: 0 });
  });
  const list = h("ol", { class: "inbox decided" });
  const count = h("p", { class: "count", role: "status" }, "Loading…");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const error = h("p", { class: "error", role: "alert" });
  const problem = problemsIn(error, "list", "stream");
  setTitle("Decided tasks");
  root.replaceChildren(h("h1", {}, "Decided tasks"), tabs("decided"), form, error, count, list, pager);

  const refresh = async () => {
    try {
      const page = await call(
        session.htk.tasks.listTasks(
          {
            status: filters.status,
            // An outcome or a decider only a person's decision has.
            outcome: filters.status === "completed" ? filters.outcome : "",
            completedBy: filters.status === "completed" ? filters.by : "",
            limit: DECIDED_SIZE,
            offset: filters.offset,
          },
          { signal },
        ),
      );
      showPage(count, pager, { offset: filters.offset, shown: page.tasks.length, total: page.total }, {
        size: DECIDED_SIZE,
        noun: "tasks",
        none: "No task matches. Tasks show here once a person decides them, or they expire or are cancelled.",
        href: (to) => decidedHref({ ...filters, offset: to }),
      });
      list.replaceChildren(...page.tasks.map((task) => taskCard(task)));
      problem("list", "");
    } catch (failure) {
      if (!signal.aborted) problem("list", `Could not list tasks: ${describe(failure)}`);
    }
  };
  void refresh();
  followChanges(
    session,
    {},
    signal,
    setState,
    coalesced(() => void refresh(), REFRESH_DELAY_MS, signal),
    (reason) => problem("stream", `Not following changes: ${reason}`),
  );
}
