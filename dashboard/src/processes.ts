// The list of processes: filters, sort and pages kept in the address (so Back
// works), refreshed live from the organization's stream of changes.
import type { ListProcessesResponse, ProcessSummary } from "@htk/client/web";

import { ago, chip, h, labelChips, liveDuration, millis, problemsIn, runLink, setTitle, tick, waitingMarker } from "./dom.js";
import { call, describe } from "./errors.js";
import { offsetOf, showPage } from "./pages.js";
import { coalesced, followChanges, type StreamState } from "./streams.js";
import type { Session } from "./token.js";

export const PAGE_SIZE = 50;
// Changes come in bursts (a pipeline's steps): one listing per burst.
const REFRESH_DELAY_MS = 150;

interface Filters {
  status: string;
  namespace: string;
  search: string;
  sort: string;
  // `key=value` each; a process must carry all of them.
  labels: string[];
  offset: number;
}

function filtersOf(query: URLSearchParams): Filters {
  return {
    status: query.get("status") ?? "",
    namespace: query.get("namespace") ?? "",
    search: query.get("search") ?? "",
    sort: query.get("sort") ?? "newest",
    labels: query.getAll("label"),
    offset: offsetOf(query),
  };
}

/** The address of the processes that carry `label` too, from the first page. */
export function withLabel(filters: Filters, label: string): string {
  const labels = filters.labels.includes(label) ? filters.labels : [...filters.labels, label];
  return hrefOf({ ...filters, labels, offset: 0 });
}

const NO_FILTERS: Filters = { status: "", namespace: "", search: "", sort: "newest", labels: [], offset: 0 };

/** The address of the processes that carry `label`, whatever else was listed. */
export function labelledHref(label: string): string {
  return withLabel(NO_FILTERS, label);
}

function hrefOf(filters: Filters): string {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(filters)) {
    if (name === "labels") continue;
    if (value && !(name === "sort" && value === "newest")) query.set(name, String(value));
  }
  for (const label of filters.labels) query.append("label", label);
  const text = query.toString();
  return text ? `#/?${text}` : "#/";
}

function select(name: string, label: string, value: string, options: [string, string][]): HTMLElement {
  return h(
    "label",
    {},
    label,
    h("select", { name }, ...options.map(([word, text]) => h("option", { value: word, selected: word === value }, text))),
  );
}

export function processesView(
  session: Session,
  root: HTMLElement,
  query: URLSearchParams,
  signal: AbortSignal,
  setState: (state: StreamState) => void,
): void {
  const filters = filtersOf(query);
  setTitle(filters.status ? `Processes (${filters.status})` : "Processes");
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter processes" },
    select("status", "Status", filters.status, [
      ["", "any"],
      ["running", "running"],
      ["completed", "completed"],
      ["failed", "failed"],
      ["cancelled", "cancelled"],
    ]),
    h("label", {}, "Namespace", h("input", { name: "namespace", value: filters.namespace, placeholder: "e.g. deployments" })),
    h("label", {}, "Search", h("input", { name: "search", type: "search", value: filters.search, placeholder: "name contains" })),
    h(
      "label",
      {},
      "Labels",
      h("input", { name: "labels", value: filters.labels.join(" "), placeholder: "key=value …" }),
    ),
    select("sort", "Sort", filters.sort, [
      ["newest", "newest first"],
      ["oldest", "oldest first"],
    ]),
    h("button", { type: "submit" }, "Apply"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const text = (name: string) => String(data.get(name) ?? "").trim();
    location.hash = hrefOf({
      status: text("status"),
      namespace: text("namespace"),
      search: text("search"),
      sort: text("sort"),
      labels: text("labels").split(/\s+/).filter(Boolean),
      offset: 0,
    });
  });
  const rows = h("tbody");
  const count = h("p", { class: "count", role: "status" }, "Loading…");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const error = h("p", { class: "error", role: "alert" });
  root.replaceChildren(
    h("h1", {}, "Processes"),
    form,
    error,
    count,
    h(
      "table",
      { class: "processes" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Name"),
          h("th", { scope: "col", class: "wide" }, "Namespace"),
          h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col" }, "Current step"),
          h("th", { scope: "col" }, "Duration"),
          h("th", { scope: "col", class: "wide" }, "Started"),
          h("th", { scope: "col", class: "wide" }, "Labels"),
        ),
      ),
      rows,
    ),
    pager,
  );

  const render = (page: ListProcessesResponse) => {
    performance.mark("process-list-render-start");
    rows.replaceChildren(...page.processes.map((process) => row(process, filters)));
    showPage(count, pager, { offset: page.offset, shown: page.processes.length, total: page.total }, {
      size: PAGE_SIZE,
      noun: "processes",
      none: hrefOf({ ...filters, offset: 0 }) === "#/"
        ? "No processes yet: a pipeline creates them with a token that has processes:write (POST /api/v1/processes)."
        : "No processes match.",
      href: (offset) => hrefOf({ ...filters, offset }),
    });
    void rows.offsetHeight; // the rows laid out, for the measure
    performance.measure("process-list-render", "process-list-render-start");
  };

  const problem = problemsIn(error, "list", "stream");
  const refresh = async () => {
    try {
      render(
        await call(
          session.htk.processes.listProcesses(
            {
              status: filters.status,
              namespace: filters.namespace,
              search: filters.search,
              sort: filters.sort,
              label: filters.labels,
              limit: PAGE_SIZE,
              offset: filters.offset,
            },
            { signal },
          ),
        ),
      );
      problem("list", "");
    } catch (failure) {
      if (!signal.aborted) problem("list", `Could not list processes: ${describe(failure)}`);
    }
  };

  // Durations and "… ago" keep counting between changes.
  const ticker = setInterval(() => tick(rows), 1000);
  signal.addEventListener("abort", () => clearInterval(ticker));
  void refresh();
  followChanges(
    session,
    { status: filters.status, namespace: filters.namespace },
    signal,
    setState,
    coalesced(() => void refresh(), REFRESH_DELAY_MS, signal),
    (reason) => problem("stream", `Not following changes: ${reason}`),
  );
}

function row(process: ProcessSummary, filters: Filters): HTMLElement {
  const started = millis(process.startedAt);
  const finished = millis(process.finishedAt);
  return h(
    "tr",
    { "data-process-id": process.processId },
    h("td", {}, h("a", { href: `#/processes/${process.processId}` }, process.name), " ", runLink(process.url)),
    h("td", { class: "wide" }, process.namespace),
    h("td", {}, h("span", { class: "chips" }, chip(process.status), waitingMarker(process.openTaskCount))),
    h("td", { class: "current-step" }, process.currentStepLabel ?? process.currentStep ?? "—"),
    h("td", { class: "duration-cell" }, liveDuration(started, finished ?? (process.status === "running" ? undefined : started))),
    h("td", { class: "wide started" }, ago(started)),
    h("td", { class: "wide" }, labelChips(process.labels, (label) => withLabel(filters, label))),
  );
}
