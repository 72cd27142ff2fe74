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

/** A duration, to the unit that matters: `850 ms`, `42 s`, `3 m 05 s`, `2 h 10 m`. */
export function formatDuration(ms?: number): string {
  if (ms === undefined || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} m ${String(seconds % 60).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} m`;
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
