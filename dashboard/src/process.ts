// One process: its step timeline on a time axis, each step's detail, the
// tasks of its human steps, and its event history, followed live.
import type { Process, Task } from "@htk/client/web";

import { ago, chip, h, keepingFocus, labelChips, liveDuration, millis, problemsIn, prose, runLink, setTitle, tick } from "./dom.js";
import { call, describe } from "./errors.js";
import { historyTable, showHistory } from "./history.js";
import { labelledHref } from "./processes.js";
import { stepDetail } from "./steps.js";
import { coalesced, type StreamState } from "./streams.js";
import { drawTimeline } from "./timeline.js";
import type { Session } from "./token.js";

// At most four reads a second however busy the process: each redraws its steps.
const REFRESH_DELAY_MS = 250;

export function processView(
  session: Session,
  root: HTMLElement,
  processId: string,
  signal: AbortSignal,
  setState: (state: StreamState) => void,
): void {
  const header = h("header", { class: "process-header" }, h("h1", {}, "Loading…"));
  const error = h("p", { class: "error", role: "alert" });
  const problem = problemsIn(error, "read", "stream");
  const axis = h("div", { class: "timeline", role: "img", "aria-label": "Step timeline" });
  const steps = h("div", { class: "steps" });
  const history = historyTable();
  const section = (id: string, title: string, content: HTMLElement) =>
    h("section", { "aria-labelledby": id }, h("h2", { id }, title), content);
  root.replaceChildren(h("p", {}, h("a", { href: "#/" }, "← All processes")), header, error);
  // Shown with the process's first read, not before: empty sections filled
  // in under a growing header would shift the whole page as it loads.
  const sections = [
    section("timeline-title", "Timeline", axis),
    section("steps-title", "Steps", steps),
    section("events-title", "Event history", history.element),
  ];

  const forms = new Map<string, HTMLElement>();
  let process: Process | undefined;
  // Kept across re-renders, so that a live update never drops a reason being typed.
  let cancelForm: HTMLElement | undefined;

  setTitle("Process");
  const render = (current: Process, tasks: Map<string, Task>) => {
    performance.mark("process-render-start");
    process = current;
    setTitle(`${current.name} (${current.status})`);
    if (current.status === "running" && session.mayWriteProcesses) {
      cancelForm ??= cancelControl(session, processId, refreshSoon);
    } else {
      cancelForm = undefined;
    }
    keepingFocus(() =>
      header.replaceChildren(h("h1", {}, current.name), facts(current), ...(cancelForm ? [cancelForm] : [])),
    );
    drawTimeline(axis, current);
    keepingFocus(() =>
      steps.replaceChildren(...current.timeline.map((entry) => stepDetail(session, entry, tasks, forms, refreshSoon))),
    );
    if (!sections[0]!.isConnected) root.append(...sections);
    void steps.offsetHeight; // laid out, for the measure (the browser tests read it)
    performance.measure("process-render", "process-render-start");
  };

  // The bars reach to now while the process runs: redrawn every second.
  const ticker = setInterval(() => {
    tick(root);
    if (process?.status === "running") drawTimeline(axis, process);
  }, 1000);
  signal.addEventListener("abort", () => clearInterval(ticker));

  const refresh = async () => {
    try {
      const [current, page] = await Promise.all([
        call(session.htk.processes.getProcess({ processId }, { signal })),
        call(session.htk.tasks.listTasks({ processId, limit: 200 }, { signal })),
      ]);
      render(current, new Map(page.tasks.map((task) => [task.taskId, task])));
      problem("read", "");
    } catch (failure) {
      if (!signal.aborted) problem("read", `Could not read the process: ${describe(failure)}`);
    }
  };
  const refreshSoon = coalesced(() => void refresh(), REFRESH_DELAY_MS, signal);

  void showHistory(session, processId, history, signal, {
    read: refresh,
    changed: refreshSoon,
    setState: (state) => {
      setState(state);
      // Connected again: whatever changed meanwhile shows at once.
      if (state === "live") refreshSoon();
    },
    failed: (failure) => problem("read", `Could not read the process: ${describe(failure)}`),
    refused: (reason) => problem("stream", `Not following the process: ${reason}`),
  });
}

/**
 * Cancel, with an optional reason, for a running process and a token that
 * may write processes: the process and its steps then end, as the live
 * update that follows shows.
 */
function cancelControl(session: Session, processId: string, done: () => void): HTMLElement {
  const reason = h("input", { id: "cancel-reason", name: "reason", maxlength: 10000 });
  const message = h("p", { class: "error", role: "alert" });
  const button = h("button", { type: "submit", class: "reject" }, "Cancel process");
  const form = h(
    "form",
    { class: "process-actions", "aria-label": "Cancel the process" },
    h("label", { for: "cancel-reason" }, "Reason (optional)"),
    reason,
    button,
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      const text = reason.value.trim();
      await call(session.htk.processes.cancelProcess({ processId, reason: text || undefined }));
      done();
    } catch (failure) {
      message.textContent = `Could not cancel the process: ${describe(failure)}`;
      button.disabled = false;
    }
  });
  return form;
}

/** The process's facts under its name. */
function facts(process: Process): HTMLElement {
  const start = millis(process.startedAt);
  const end = millis(process.finishedAt);
  const dl = h("dl", { class: "facts" });
  const fact = (term: string, value: Node | string) => dl.append(h("dt", {}, term), h("dd", {}, value));
  fact("Namespace", process.namespace);
  if (Object.keys(process.labels).length) fact("Labels", labelChips(process.labels, labelledHref));
  const link = runLink(process.url);
  if (link) fact("Link", link);
  fact("Status", chip(process.status));
  fact("Started", ago(start));
  fact("Duration", liveDuration(start, end ?? (process.status === "running" ? undefined : start)));
  if (process.summary) fact("Summary", prose("span", "summary", process.summary));
  if (process.error) fact("Error", prose("span", "step-error", process.error));
  if (process.reason) fact("Reason", prose("span", "reason", process.reason));
  return dl;
}
