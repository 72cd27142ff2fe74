// One process: its step timeline on a time axis, each step's detail, the
// tasks of its human steps, and its event history, followed live through
// WatchProcess and resumed with `after_seq` after a break.
import type { Process, ProcessEvent, Task, TimelineEntry } from "@htk/client/web";

import { chip, formatDuration, formatTime, h, keepingFocus, liveDuration, millis, problemsIn, tick } from "./dom.js";
import { call, coalesced, describe, follow, inBandError, type Session, type StreamState } from "./session.js";
import { taskActions, taskSummary } from "./tasks.js";

const EVENTS_PAGE = 1000;
const REFRESH_DELAY_MS = 100;

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
  const history = h("tbody");
  root.replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "← All processes")),
    header,
    error,
    h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), axis),
    h("section", { "aria-labelledby": "steps-title" }, h("h2", { id: "steps-title" }, "Steps"), steps),
    h(
      "section",
      { "aria-labelledby": "events-title" },
      h("h2", { id: "events-title" }, "Event history"),
      h(
        "table",
        { class: "events" },
        h(
          "thead",
          {},
          h("tr", {}, ...["#", "Time", "Type", "Step", "What"].map((title) => h("th", { scope: "col" }, title))),
        ),
        history,
      ),
    ),
  );

  const forms = new Map<string, HTMLElement>();
  let process: Process | undefined;
  let lastSeq = 0;
  // Whether the process has finished: then its stream ends, and stays ended.
  let ended = false;

  const render = (current: Process, tasks: Map<string, Task>) => {
    process = current;
    const start = millis(current.startedAt);
    const end = millis(current.finishedAt);
    const dl = h("dl", { class: "facts" });
    const fact = (term: string, value: Node | string) => dl.append(h("dt", {}, term), h("dd", {}, value));
    fact("Namespace", current.namespace);
    fact("Status", chip(current.status));
    fact("Started", formatTime(start));
    fact("Duration", liveDuration(start, end ?? (current.status === "running" ? undefined : start)));
    if (current.summary) fact("Summary", current.summary);
    if (current.error) fact("Error", current.error);
    header.replaceChildren(h("h1", {}, current.name), dl);
    drawAxis();
    keepingFocus(() =>
      steps.replaceChildren(...current.timeline.map((entry) => stepDetail(session, entry, tasks, forms, refreshSoon))),
    );
  };

  // The bars span from the start to the end, or to now while running: redrawn
  // every second, inside a box of fixed height, so nothing moves around it.
  const drawAxis = () => {
    if (!process) return;
    const start = millis(process.startedAt) ?? Date.now();
    const end = millis(process.finishedAt) ?? Date.now();
    const span = Math.max(end - start, 1000);
    const percent = (ms: number) => `${(((ms - start) / span) * 100).toFixed(2)}%`;
    axis.replaceChildren(
      ...process.timeline.map((entry) => {
        const from = millis(entry.startedAt);
        const to = millis(entry.completedAt) ?? (entry.status === "running" ? end : from);
        let bar: HTMLElement;
        if (from === undefined) {
          bar = h("span", { class: "bar-none" }, "not started");
        } else {
          // Through the CSSOM: the Content-Security-Policy forbids style attributes.
          bar = h("span", { class: `bar status-${entry.status}` });
          bar.style.left = percent(from);
          bar.style.width = percent(start + (to ?? from) - from);
        }
        return h(
          "div",
          { class: "lane" },
          h("span", { class: "lane-label" }, entry.label),
          h("span", { class: "track", title: `${entry.label}: ${entry.status}` }, bar),
        );
      }),
      h("div", { class: "axis-ends" }, h("span", {}, formatTime(start)), h("span", {}, formatTime(millis(process.finishedAt) ?? Date.now()))),
    );
  };
  const ticker = setInterval(() => {
    tick(root);
    if (process?.status === "running") drawAxis();
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

  const record = (event: ProcessEvent) => {
    // A resumed stream starts after the last event shown: none twice.
    if (event.seq <= lastSeq) return;
    lastSeq = event.seq;
    ended = event.type === "completed" || event.type === "failed";
    history.append(eventRow(event));
  };

  void (async () => {
    try {
      // The history so far, then the stream from its last event on.
      for (;;) {
        const { events } = await call(
          session.htk.processes.listProcessEvents({ processId, afterSeq: lastSeq, limit: EVENTS_PAGE }, { signal }),
        );
        events.forEach(record);
        if (events.length < EVENTS_PAGE) break;
      }
      await refresh();
    } catch (failure) {
      if (!signal.aborted) problem("read", `Could not read the process: ${describe(failure)}`);
      return;
    }
    await follow(signal, {
      open: (abort) => session.htk.processes.watchProcess({ processId, afterSeq: lastSeq }, { signal: abort }),
      receive: (message) => {
        switch (message.kind.case) {
          case "error":
            return inBandError(message.kind.value);
          case "event":
            record(message.kind.value);
            refreshSoon();
            return;
          default:
            // The snapshot and heartbeats: refresh() reads the process itself.
            return;
        }
      },
      state: (state) => {
        setState(state);
        // Connected again: whatever changed meanwhile shows at once.
        if (state === "live") refreshSoon();
      },
      finished: () => ended,
      refused: (reason) => problem("stream", `Not following the process: ${reason}`),
    });
  })();
}

function stepDetail(
  session: Session,
  entry: TimelineEntry,
  tasks: Map<string, Task>,
  forms: Map<string, HTMLElement>,
  done: () => void,
): HTMLElement {
  const started = millis(entry.startedAt);
  const completed = millis(entry.completedAt);
  const task = entry.taskId ? tasks.get(entry.taskId) : undefined;
  return h(
    "article",
    { class: `step status-${entry.status}`, "data-step": entry.step },
    h("h3", {}, entry.label, " ", chip(entry.status), entry.human ? h("span", { class: "human" }, "human step") : null),
    h(
      "p",
      { class: "meta" },
      `${entry.step} · started ${formatTime(started)} · `,
      entry.status === "running" ? liveDuration(started, undefined) : formatDuration(entry.durationMs ?? (started && completed ? completed - started : undefined)),
    ),
    entry.status === "running" && entry.progressPercent !== undefined
      ? h(
          "p",
          { class: "progress" },
          h("progress", { max: 100, value: entry.progressPercent, "aria-label": `${entry.label} progress` }),
          ` ${entry.progressPercent}% `,
          entry.progressMessage ?? "",
        )
      : entry.status === "running" && entry.progressMessage
        ? h("p", { class: "progress" }, entry.progressMessage)
        : null,
    entry.detail ? h("p", { class: "detail" }, entry.detail) : null,
    entry.error ? h("p", { class: "step-error" }, entry.error) : null,
    entry.completedBy ? h("p", {}, `Decided by ${entry.completedBy}`) : null,
    entry.data && Object.keys(entry.data).length
      ? h("pre", { class: "data", "aria-label": `${entry.label} data` }, JSON.stringify(entry.data, null, 2))
      : null,
    task ? taskSummary(task) : null,
    task ? taskActions(session, task, forms, done) : null,
  );
}

function eventRow(event: ProcessEvent): HTMLElement {
  const what = [
    event.detail,
    event.message,
    event.percent !== undefined ? `${event.percent}%` : undefined,
    event.error,
    event.summary,
    event.outcome && `${event.outcome} by ${event.completedBy ?? "?"}`,
    event.comment && `“${event.comment}”`,
  ]
    .filter(Boolean)
    .join(" · ");
  return h(
    "tr",
    { "data-seq": event.seq },
    h("td", {}, String(event.seq)),
    h("td", {}, formatTime(millis(event.timestamp))),
    h("td", {}, event.type),
    h("td", {}, event.step ?? ""),
    h("td", {}, what),
  );
}
