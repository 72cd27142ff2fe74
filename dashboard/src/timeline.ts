// A process's steps as bars on one time axis, from its start to its end, or
// to now while it runs.
import type { Process } from "@htk/client/web";

import { formatTime, h, millis } from "./dom.js";

/** Draws `process`'s steps into `axis`, a box of fixed height, so nothing moves around it on a redraw. */
export function drawTimeline(axis: HTMLElement, process: Process): void {
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
}
