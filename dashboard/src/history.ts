// A process's event history: read in pages up to now, then followed live
// through the client library's watch, which resumes after a break where it
// stopped, so each event shows once. The page holds every event but draws
// one window of them (a process may log thousands): the latest, which
// follows what arrives, or an earlier one a person paged back to.
import type { ProcessEvent } from "@htk/client/web";

import { formatTime, h, millis } from "./dom.js";
import { call } from "./errors.js";
import { follow, type StreamState } from "./streams.js";
import type { Session } from "./token.js";

const EVENTS_PAGE = 1000;
/** How many events one window of the history draws. */
export const HISTORY_WINDOW = 100;

/** Where the history is drawn: its rows, and the count and pager around them. */
export interface HistoryView {
  element: HTMLElement;
  rows: HTMLElement;
  count: HTMLElement;
  pager: HTMLElement;
}

/** The history's table, empty until `showHistory` fills it. */
export function historyTable(): HistoryView {
  const rows = h("tbody");
  const count = h("p", { class: "count", role: "status" });
  const pager = h("div", { class: "pager" });
  const table = h(
    "table",
    { class: "events" },
    h("thead", {}, h("tr", {}, ...["#", "Time", "Type", "Step", "By", "What"].map((title) => h("th", { scope: "col" }, title)))),
    rows,
  );
  return { element: h("div", {}, count, table, pager), rows, count, pager };
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

/** Shows the history so far in `view`, then follows it until the process finishes or `signal` aborts. */
export async function showHistory(
  session: Session,
  processId: string,
  view: HistoryView,
  signal: AbortSignal,
  follower: HistoryFollower,
): Promise<void> {
  const events: ProcessEvent[] = [];
  // The first event of the window shown; undefined: the latest window.
  let from: number | undefined;
  // The events whose rows are in the table: [shownStart, shownEnd).
  let shownStart = 0;
  let shownEnd = 0;
  let scheduled = false;
  let earlierTo = 0;
  let laterTo: number | undefined;
  const pageButton = (label: string, to: () => number | undefined) => {
    const button = h("button", { type: "button", class: "link" }, label);
    button.addEventListener("click", () => {
      from = to();
      draw();
    });
    return button;
  };
  const earlier = pageButton("← Earlier events", () => earlierTo);
  const later = pageButton("Later events →", () => laterTo);
  const draw = () => {
    performance.mark("history-render-start");
    scheduled = false;
    const start = from ?? Math.max(0, events.length - HISTORY_WINDOW);
    const end = Math.min(events.length, start + HISTORY_WINDOW);
    if (start >= shownStart && start <= shownEnd) {
      // The window moved on (new events while following): only its ends change.
      for (let drop = start - shownStart; drop > 0; drop--) view.rows.firstElementChild?.remove();
      view.rows.append(...events.slice(Math.max(shownEnd, start), end).map(eventRow));
    } else {
      view.rows.replaceChildren(...events.slice(start, end).map(eventRow));
    }
    [shownStart, shownEnd] = [start, end];
    view.count.textContent = events.length ? `Events ${start + 1} to ${end} of ${events.length}` : "No events yet.";
    earlierTo = Math.max(0, start - HISTORY_WINDOW);
    laterTo = end + HISTORY_WINDOW >= events.length ? undefined : end;
    earlier.disabled = start === 0;
    later.disabled = end === events.length;
    // Paging only once the history outgrows one window.
    if (events.length > HISTORY_WINDOW && !view.pager.hasChildNodes()) view.pager.append(earlier, later);
    void view.rows.offsetHeight; // laid out, for the measure (the browser tests read it)
    performance.measure("history-render", "history-render-start");
  };
  // Live events come in bursts (dozens a second): drawn once per frame.
  const drawSoon = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(draw);
  };
  let lastSeq = 0;
  const record = (event: ProcessEvent) => {
    lastSeq = event.seq;
    events.push(event);
  };
  try {
    for (;;) {
      const page = await call(
        session.htk.processes.listProcessEvents({ processId, afterSeq: lastSeq, limit: EVENTS_PAGE }, { signal }),
      );
      page.events.forEach(record);
      if (page.events.length < EVENTS_PAGE) break;
    }
    draw();
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
      drawSoon();
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
