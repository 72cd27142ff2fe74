// Paging, the same for every list: which part of the whole a page shows, and
// links to the pages before and after it, in the address (so Back works).
import { h } from "./dom.js";

export interface Paging {
  /** How many rows a page holds. */
  size: number;
  /** What the rows are, in the plural: `processes`. */
  noun: string;
  /** What the count says when nothing matches at all. */
  none: string;
  /** The address of the page starting at `offset`. */
  href(offset: number): string;
}

/**
 * Fills `count` ("51 to 55 of 55 processes") and `pager` (previous and next
 * page) for a page of `shown` rows from `offset` out of `total`. An offset
 * past the end (an old link, a hand-made address) says so and links back.
 */
export function showPage(
  count: HTMLElement,
  pager: HTMLElement,
  page: { offset: number; shown: number; total: number },
  paging: Paging,
): void {
  const last = page.offset + page.shown;
  if (page.total === 0) {
    count.replaceChildren(paging.none);
  } else if (page.shown === 0) {
    count.replaceChildren(`No ${paging.noun} on this page. `, h("a", { href: paging.href(0) }, "Go to the first page"));
  } else {
    count.replaceChildren(`${page.offset + 1} to ${last} of ${page.total} ${paging.noun}`);
  }
  const link = (label: string, offset: number, enabled: boolean) =>
    enabled
      ? h("a", { href: paging.href(offset) }, label)
      : h("span", { class: "disabled", "aria-disabled": "true" }, label);
  pager.replaceChildren(
    // From past the end, the previous page is the last one that has rows.
    link("← Previous page", Math.max(0, Math.min(page.offset, page.total) - paging.size), page.offset > 0),
    link("Next page →", last, last < page.total),
  );
}

/** The offset an address asks for: a whole number, else the first page. */
export function offsetOf(query: URLSearchParams): number {
  return Math.max(0, Math.floor(Number(query.get("offset"))) || 0);
}
