// The header's count of open tasks, live on every view, and the opt-in
// browser notification of a new one: a team keeps the tab open all day and
// looks at it when something waits for them.
import type { Task } from "@htk/client/web";

import { h } from "./dom.js";
import { call } from "./errors.js";
import { coalesced, followChanges } from "./streams.js";
import type { Session } from "./token.js";

// Open tasks are read again at most once a second, however busy the stream.
const REFRESH_DELAY_MS = 1000;
// The newest open tasks compared between reads to find new ones: more than
// open in one second on any team's page.
const WATCHED = 50;

/**
 * Fills `badge` with the number of open tasks and keeps it current until
 * `signal` aborts; `newTask` hears of each task that opened since the first
 * read. Its stream is its own, so that views need not report to it.
 */
export function followOpenTasks(
  session: Session,
  badge: HTMLElement,
  signal: AbortSignal,
  newTask: (task: Task) => void,
): void {
  let seen: Set<string> | undefined;
  const refresh = async () => {
    try {
      const page = await call(session.htk.tasks.listTasks({ status: "open", limit: WATCHED }, { signal }));
      badge.textContent = String(page.total);
      badge.title = `${page.total} open ${page.total === 1 ? "task" : "tasks"}`;
      badge.hidden = page.total === 0;
      if (seen) for (const task of page.tasks) if (!seen.has(task.taskId)) newTask(task);
      seen = new Set(page.tasks.map((task) => task.taskId));
    } catch {
      // The views say what went wrong; a stale count stays until the next change.
    }
  };
  void refresh();
  followChanges(session, {}, signal, () => {}, coalesced(() => void refresh(), REFRESH_DELAY_MS, signal), () => {});
}

/**
 * The button that asks the browser for permission to notify, shown only
 * where the browser can and the person has not answered yet: never asked
 * without their click.
 */
export function notifyButton(): HTMLElement | null {
  if (!("Notification" in window) || Notification.permission !== "default") return null;
  const button = h("button", { type: "button", class: "link" }, "Notify me of new tasks");
  button.addEventListener("click", async () => {
    const answer = await Notification.requestPermission();
    button.replaceWith(answer === "granted" ? "Notifications on" : "");
  });
  return button;
}

/** A browser notification of `task`, if the person allowed them; a click opens its process. */
export function notifyOf(task: Task): void {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const notification = new Notification(`${task.processName}: ${task.label}`, {
    body: "waits for a person",
    tag: task.taskId,
  });
  notification.addEventListener("click", () => {
    window.focus();
    location.hash = `#/processes/${task.processId}`;
  });
}
