// A process's event history: a row per event, read in pages up to now, then
// followed live through the client library's watch, which resumes after a
// break where it stopped, so each event shows once.
import type { ProcessEvent } from "@htk/client/web";

import { formatTime, h, millis } from "./dom.js";
import { call } from "./errors.js";
import { follow, type StreamState } from "./streams.js";
import type { Session } from "./token.js";

const EVENTS_PAGE = 1000;

/** The history's table, empty until `showHistory` fills it. */
export function historyTable(rows: HTMLElement): HTMLElement {
  return h(
    "table",
    { class: "events" },
    h("thead", {}, h("tr", {}, ...["#", "Time", "Type", "Step", "By", "What"].map((title) => h("th", { scope: "col" }, title)))),
    rows,
  );
}

/** What showing a process's history tells the rest of its view. */
export interface HistoryFollower {
  /** Once the events so far are shown, before following; a failure to read them ends the history. */
  read(): Promise<void>;
  /** After each live event. */
  changed(): void;
  setState(state: StreamState): void;
  failed(reason: unknown): void;
  refused(reason: string): void;
}

/** Shows the history so far in `rows`, then follows it until the process finishes or `signal` aborts. */
export async function showHistory(
  session: Session,
  processId: string,
  rows: HTMLElement,
  signal: AbortSignal,
  follower: HistoryFollower,
): Promise<void> {
  let lastSeq = 0;
  const record = (event: ProcessEvent) => {
    lastSeq = event.seq;
    rows.append(eventRow(event));
  };
  try {
    for (;;) {
      const { events } = await call(
        session.htk.processes.listProcessEvents({ processId, afterSeq: lastSeq, limit: EVENTS_PAGE }, { signal }),
      );
      events.forEach(record);
      if (events.length < EVENTS_PAGE) break;
    }
    await follower.read();
  } catch (failure) {
    if (!signal.aborted) follower.failed(failure);
    return;
  }
  await follow(
    signal,
    (options) => session.htk.watch({ processId, afterSeq: lastSeq }, options),
    follower.setState,
    ({ kind }) => {
      if (kind.case !== "event") return;
      record(kind.value);
      follower.changed();
    },
    follower.refused,
  );
}

function eventRow(event: ProcessEvent): HTMLElement {
  const what = [
    event.detail,
    event.message,
    event.percent !== undefined ? `${event.percent}%` : undefined,
    event.error,
    event.summary,
    event.reason,
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
    // Who caused it: a token's name, or htk for a timeout; events logged before htk recorded it have none.
    h("td", { class: "actor" }, event.actor ?? ""),
    h("td", {}, what),
  );
}
