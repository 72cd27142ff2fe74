// A few DOM helpers, so that views read as the markup they build.

type Child = Node | string | null | undefined | false;
type Props = Record<string, string | number | boolean | EventListener | undefined>;

/**
 * An element with attributes, `on<event>` listeners and children; text is
 * always a text node, never parsed as HTML.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  element.append(...children.flat().filter((child): child is Node | string => !!child));
  return element;
}

/** Milliseconds since the epoch of a protobuf Timestamp, if set. */
export function millis(timestamp?: { seconds: bigint; nanos: number }): number | undefined {
  return timestamp ? Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6) : undefined;
}

/** A moment as people read it: local date and time to the second. */
export function formatTime(ms?: number): string {
  if (ms === undefined) return "—";
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

const UNITS: [string, number][] = [
  ["d", 86_400_000],
  ["h", 3_600_000],
  ["m", 60_000],
  ["s", 1000],
];

/**
 * A duration as people read it at a glance: under a second in milliseconds
 * (`850 ms`, never `0 s`), else its largest two units (`42 s`, `1 m 39 s`,
 * `2 h 5 m`, `3 d 4 h`), a zero second unit left out (`2 h`).
 */
export function formatDuration(ms?: number): string {
  if (ms === undefined || ms < 0 || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const largest = UNITS.findIndex(([, size]) => ms >= size);
  const [unit, size] = UNITS[largest]!;
  const whole = Math.floor(ms / size);
  const next = UNITS[largest + 1];
  const rest = next ? Math.floor((ms - whole * size) / next[1]) : 0;
  return rest && next ? `${whole} ${unit} ${rest} ${next[0]}` : `${whole} ${unit}`;
}

/** The browser's time zone and its offset at `ms`, e.g. `Europe/Berlin, UTC+01:00`. */
// Read once: resolving it costs more than the rest of a list's row.
const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;

export function timeZoneAt(ms: number): string {
  const offset = -new Date(ms).getTimezoneOffset();
  const sign = offset < 0 ? "-" : "+";
  const pad = (n: number) => String(Math.floor(Math.abs(n))).padStart(2, "0");
  return `${TIME_ZONE}, UTC${sign}${pad(offset / 60)}:${pad(offset % 60)}`;
}

/** A moment in full: local date and time to the second, with the time zone. */
export function formatMoment(ms: number): string {
  return `${formatTime(ms)} (${timeZoneAt(ms)})`;
}

/**
 * How long ago `ms` was (`5 m ago`), kept current by `tick()`; the moment
 * itself, with its time zone, shows on hover and is read to screen readers.
 */
export function ago(ms?: number): HTMLElement {
  if (ms === undefined) return h("span", {}, "—");
  const moment = formatMoment(ms);
  const relative = h("span", { "aria-hidden": "true", "data-ago": ms }, agoText(Date.now() - ms));
  return h(
    "time",
    { datetime: new Date(ms).toISOString(), title: moment },
    relative,
    h("span", { class: "visually-hidden" }, moment),
  );
}

function agoText(elapsed: number): string {
  return elapsed < 1000 ? "just now" : `${formatDuration(elapsed)} ago`;
}

/**
 * A process's labels as chips, sorted by key (a map's order is not kept on
 * the wire), each a link to the list of processes that carry it (`href` makes the address of that list from `key=value`).
 */
export function labelChips(labels: { [key: string]: string }, href: (label: string) => string): HTMLElement {
  return h(
    "span",
    { class: "labels" },
    ...Object.entries(labels)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, value]) =>
      h("a", { class: "chip label", href: href(`${key}=${value}`), title: `List the processes labelled ${key}=${value}` }, `${key}=${value}`),
    ),
  );
}

/**
 * The link a process was created with, opening in a new tab without handing
 * it this page (`noopener`) or its address (`noreferrer`). The API takes only
 * http(s) URLs; anything else is not made a link all the same.
 */
export function runLink(url?: string): HTMLElement | null {
  if (!url || !/^https?:\/\//i.test(url)) return null;
  return h("a", { class: "run-link", href: url, target: "_blank", rel: "noopener noreferrer" }, "Open run ↗");
}

/** A status word as a coloured chip (the word itself stays, for those who do not see colour). */
export function chip(status: string): HTMLElement {
  return h("span", { class: `chip status-${status}` }, status);
}

/** The marker of a run that waits for a person, with how many of its tasks are open. */
export function waitingMarker(openTasks: number): HTMLElement | null {
  if (openTasks <= 0) return null;
  const words = openTasks === 1 ? "1 open task" : `${openTasks} open tasks`;
  // On a phone the marker reads "approval (1)"; screen readers hear it all.
  return h(
    "span",
    { class: "chip waiting", title: `Waiting for approval: ${words}` },
    h("span", { class: "long" }, "waiting for "),
    `approval (${openTasks})`,
  );
}

/**
 * A duration that keeps counting while its end is unknown: `tick()` (run by
 * the views every second) refreshes every such element.
 */
export function liveDuration(startMs: number | undefined, endMs: number | undefined): HTMLElement {
  const element = h("span", { class: "duration" }, formatDuration(startMs && (endMs ?? Date.now()) - startMs));
  if (startMs !== undefined && endMs === undefined) element.dataset.since = String(startMs);
  return element;
}

export function tick(root: ParentNode): void {
  const now = Date.now();
  for (const element of root.querySelectorAll<HTMLElement>("[data-since]")) {
    element.textContent = formatDuration(now - Number(element.dataset.since));
  }
  for (const element of root.querySelectorAll<HTMLElement>("[data-ago]")) {
    element.textContent = agoText(now - Number(element.dataset.ago));
  }
}

/**
 * Text a person wrote or a program reported (an error, a detail, a comment),
 * its line breaks kept and its long words wrapped, so it reads as written.
 */
export function prose(tag: "p" | "dd" | "q" | "span", className: string, text: string): HTMLElement {
  return h(tag, { class: `${className} prose` }, text);
}

/** Sets the tab's title: what the view shows first, then `htk`. */
export function setTitle(what: string): void {
  document.title = `${what} · htk`;
}

/**
 * Runs `render`, which may move the element that has the keyboard focus (a
 * kept form re-attached in a redrawn list); moving an element blurs it, so
 * the focus goes back where it was.
 */
export function keepingFocus(render: () => void): void {
  const focused = document.activeElement;
  render();
  if (focused instanceof HTMLElement && focused !== document.activeElement && focused.isConnected) {
    focused.focus({ preventScroll: true });
  }
}

/**
 * An alert shared by a view's sources of trouble (its reads, its stream),
 * each setting or clearing its own problem: the alert shows the first one
 * standing, in the order given, so a read that succeeds does not clear why
 * the stream stopped.
 */
export function problemsIn<Source extends string>(
  alert: HTMLElement,
  ...order: Source[]
): (source: Source, problem: string) => void {
  const standing = new Map<Source, string>();
  return (source, problem) => {
    standing.set(source, problem);
    alert.textContent = order.map((name) => standing.get(name)).find(Boolean) ?? "";
  };
}
