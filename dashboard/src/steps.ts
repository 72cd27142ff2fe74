// One step of a process in detail: its status, times, progress, what it
// reported, and the task of a human step with its actions.
import type { Task, TimelineEntry } from "@htk/client/web";

import { ago, chip, formatDuration, h, liveDuration, millis, prose } from "./dom.js";
import { taskActions, taskSummary } from "./tasks.js";
import type { Session } from "./token.js";

export function stepDetail(
  session: Session,
  entry: TimelineEntry,
  tasks: Map<string, Task>,
  forms: Map<string, HTMLElement>,
  done: () => void,
): HTMLElement {
  const started = millis(entry.startedAt);
  const completed = millis(entry.completedAt);
  const task = entry.taskId ? tasks.get(entry.taskId) : undefined;
  // A cancelled step keeps the progress it had reached: where the run stopped.
  const showsProgress = entry.status === "running" || entry.status === "cancelled";
  return h(
    "article",
    { class: `step status-${entry.status}`, "data-step": entry.step },
    h("h3", {}, entry.label, " ", chip(entry.status), entry.human ? h("span", { class: "human" }, "human step") : null),
    h(
      "p",
      { class: "meta" },
      `${entry.step} · started `,
      ago(started),
      " · ",
      entry.status === "running" ? liveDuration(started, undefined) : formatDuration(entry.durationMs ?? (started && completed ? completed - started : undefined)),
    ),
    showsProgress && entry.progressPercent !== undefined
      ? h(
          "p",
          { class: "progress" },
          h("progress", { max: 100, value: entry.progressPercent, "aria-label": `${entry.label} progress` }),
          ` ${entry.progressPercent}% `,
          entry.progressMessage ?? "",
        )
      : showsProgress && entry.progressMessage
        ? prose("p", "progress", entry.progressMessage)
        : null,
    entry.detail ? prose("p", "detail", entry.detail) : null,
    entry.error ? prose("p", "step-error", entry.error) : null,
    entry.completedBy ? h("p", {}, `Decided by ${entry.completedBy}`) : null,
    entry.data && Object.keys(entry.data).length
      ? h("pre", { class: "data", "aria-label": `${entry.label} data` }, JSON.stringify(entry.data, null, 2))
      : null,
    task ? taskSummary(task) : null,
    task ? taskActions(session, task, forms, done) : null,
  );
}
