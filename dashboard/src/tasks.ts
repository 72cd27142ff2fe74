// Human steps' tasks: what each shows, the Approve and Reject controls, and
// the inbox of open tasks across processes.
import type { Task } from "@htk/client/web";

import { chip, formatTime, h, keepingFocus, millis, problemsIn } from "./dom.js";
import { call, describe } from "./errors.js";
import { offsetOf, showPage } from "./pages.js";
import { coalesced, followChanges, type StreamState } from "./streams.js";
import type { Session } from "./token.js";

const INBOX_SIZE = 100;
const REFRESH_DELAY_MS = 150;

/** A task's state in words: who decided it, with what outcome and comment. */
export function taskSummary(task: Task): HTMLElement {
  const parts: (string | HTMLElement)[] = [chip(task.status), " "];
  if (task.status === "completed") {
    parts.push(
      h("strong", {}, task.outcome ?? ""),
      ` by ${task.completedBy ?? "?"} at ${formatTime(millis(task.completedAt))}`,
    );
    if (task.comment) parts.push(": ", h("q", {}, task.comment));
  } else if (task.status === "open") {
    parts.push(`waiting for a person since ${formatTime(millis(task.openedAt))}`);
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
  const decide = (outcome: "approved" | "rejected") => async (event: Event) => {
    event.preventDefault();
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
  const form = h(
    "form",
    { class: "task-actions", "aria-label": `Decide ${task.label}` },
    h("label", { for: id }, "Comment (optional)"),
    comment,
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "submit", class: "approve", onclick: decide("approved") }, "Approve"),
      h("button", { type: "button", class: "reject", onclick: decide("rejected") }, "Reject"),
    ),
    message,
  );
  forms.set(task.taskId, form);
  return form;
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
  root.replaceChildren(h("h1", {}, "Tasks waiting for a person"), note, error, count, list, pager);

  const refresh = async () => {
    try {
      const page = await call(session.htk.tasks.listTasks({ status: "open", limit: INBOX_SIZE, offset }, { signal }));
      showPage(count, pager, { offset, shown: page.tasks.length, total: page.total }, {
        size: INBOX_SIZE,
        noun: "open tasks",
        none: "No task is waiting.",
        href: (to) => (to ? `#/tasks?offset=${to}` : "#/tasks"),
      });
      keepingFocus(() =>
        list.replaceChildren(
          ...page.tasks.map((task) =>
            h(
              "li",
              { class: "task", "data-task-id": task.taskId },
              h("h2", {}, h("a", { href: `#/processes/${task.processId}` }, task.processName), " — ", task.label),
              h("p", { class: "meta" }, task.namespace),
              taskSummary(task),
              taskActions(session, task, forms, refreshSoon),
            ),
          ),
        ),
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
