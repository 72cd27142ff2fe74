// Webhooks: create one (its secret shown once, with a copy button), list
// them, enable or delete one, and a webhook's delivery log with redelivery.
// For tokens with the scope webhooks:manage; others are told they lack it.
import type { Webhook, WebhookDelivery } from "@htk/client/web";

import { chip, formatTime, h, millis } from "./dom.js";
import { call, describe } from "./errors.js";
import type { StreamState } from "./streams.js";
import type { Session } from "./token.js";

const LOG_SIZE = 50;

export function webhooksView(session: Session, root: HTMLElement, setState: (state: StreamState) => void): void {
  // Nothing here streams: the page shows what it read, and reads again after each action.
  setState("refused");
  if (!session.mayManageWebhooks) {
    root.replaceChildren(
      h("h1", {}, "Webhooks"),
      h("p", { class: "note" }, "This token lacks the scope webhooks:manage: it cannot see or change webhooks."),
    );
    return;
  }
  const error = h("p", { class: "error", role: "alert" });
  const secret = h("div", { class: "secret", role: "status" });
  const list = h("tbody");
  const refresh = async () => {
    try {
      const { webhooks } = await call(session.htk.webhooks.listWebhooks({}));
      list.replaceChildren(...webhooks.map((webhook) => row(webhook)));
    } catch (failure) {
      error.textContent = `Could not list the webhooks: ${describe(failure)}`;
    }
  };
  const act = (what: string, action: () => Promise<unknown>) => async () => {
    error.textContent = "";
    try {
      await call(action());
    } catch (failure) {
      error.textContent = `Could not ${what}: ${describe(failure)}`;
    }
    await refresh();
  };
  const row = (webhook: Webhook) =>
    h(
      "tr",
      { "data-webhook-id": webhook.webhookId },
      h("td", {}, h("a", { href: `#/webhooks/${webhook.webhookId}` }, webhook.url)),
      h("td", {}, webhook.events.join(", ")),
      h("td", {}, webhook.namespace ?? "all"),
      h("td", {}, webhook.enabled ? "enabled" : "disabled"),
      h("td", {}, formatTime(millis(webhook.createdAt))),
      h(
        "td",
        {},
        webhook.enabled
          ? null
          : h("button", { type: "button", onclick: act("enable it", () => session.htk.webhooks.enableWebhook({ webhookId: webhook.webhookId })) }, "Enable"),
        h("button", { type: "button", onclick: act("delete it", () => session.htk.webhooks.deleteWebhook({ webhookId: webhook.webhookId })) }, "Delete"),
      ),
    );
  const url = h("input", { id: "webhook-url", name: "url", type: "url", required: true });
  const events = h("input", { id: "webhook-events", name: "events", value: "*" });
  const namespace = h("input", { id: "webhook-namespace", name: "namespace" });
  const form = h(
    "form",
    { class: "webhook-create", "aria-label": "Create a webhook" },
    h("label", { for: "webhook-url" }, "URL"),
    url,
    h("label", { for: "webhook-events" }, "Event types (comma-separated, * for all)"),
    events,
    h("label", { for: "webhook-namespace" }, "Namespace (optional)"),
    namespace,
    h("button", { type: "submit" }, "Create webhook"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const created = await call(
        session.htk.webhooks.createWebhook({
          url: url.value.trim(),
          events: events.value.split(",").map((name) => name.trim()).filter(Boolean),
          namespace: namespace.value.trim() || undefined,
        }),
      );
      showSecret(secret, created.secret ?? "");
      form.reset();
    } catch (failure) {
      error.textContent = `Could not create the webhook: ${describe(failure)}`;
    }
    await refresh();
  });
  root.replaceChildren(
    h("h1", {}, "Webhooks"),
    form,
    error,
    secret,
    h(
      "table",
      { class: "webhooks" },
      h("thead", {}, h("tr", {}, ...["URL", "Events", "Namespace", "State", "Created", ""].map((name) => h("th", {}, name)))),
      list,
    ),
  );
  void refresh();
}

/** The new webhook's secret, shown this once, with a button that copies it. */
function showSecret(box: HTMLElement, secret: string): void {
  const copied = h("span", { class: "note" });
  const copy = h("button", { type: "button" }, "Copy secret");
  copy.addEventListener("click", async () => {
    await navigator.clipboard.writeText(secret);
    copied.textContent = " Copied.";
  });
  box.replaceChildren(
    h("p", {}, "The webhook's signing secret, shown this once: keep it where your receiver can read it."),
    h("code", { class: "secret-value" }, secret),
    " ",
    copy,
    copied,
  );
}

export function deliveriesView(
  session: Session,
  root: HTMLElement,
  webhookId: string,
  setState: (state: StreamState) => void,
): void {
  setState("refused");
  const error = h("p", { class: "error", role: "alert" });
  const list = h("tbody");
  const refresh = async () => {
    try {
      const page = await call(session.htk.webhooks.listWebhookDeliveries({ webhookId, limit: LOG_SIZE }));
      list.replaceChildren(...page.deliveries.map((delivery) => row(delivery)));
    } catch (failure) {
      error.textContent = `Could not read the delivery log: ${describe(failure)}`;
    }
  };
  const row = (delivery: WebhookDelivery) => {
    const redeliver = h("button", { type: "button" }, "Redeliver");
    redeliver.addEventListener("click", async () => {
      error.textContent = "";
      try {
        await call(session.htk.webhooks.redeliverWebhookDelivery({ webhookId, deliveryId: delivery.deliveryId }));
      } catch (failure) {
        error.textContent = `Could not redeliver: ${describe(failure)}`;
      }
      await refresh();
    });
    return h(
      "tr",
      { "data-delivery-id": delivery.deliveryId },
      h("td", {}, delivery.eventType),
      h("td", {}, h("a", { href: `#/processes/${delivery.processId}` }, delivery.processId)),
      h("td", {}, chip(delivery.status)),
      h("td", {}, String(delivery.attempts)),
      h("td", { class: "last" }, delivery.lastError ?? (delivery.lastStatusCode !== undefined ? String(delivery.lastStatusCode) : "—")),
      h("td", {}, formatTime(millis(delivery.createdAt))),
      h("td", {}, redeliver),
    );
  };
  const reload = h("button", { type: "button", onclick: () => void refresh() }, "Refresh");
  root.replaceChildren(
    h("h1", {}, "Delivery log"),
    h("p", {}, h("a", { href: "#/webhooks" }, "← All webhooks"), " ", reload),
    error,
    h(
      "table",
      { class: "deliveries" },
      h("thead", {}, h("tr", {}, ...["Event", "Process", "Status", "Attempts", "Last", "Created", ""].map((name) => h("th", {}, name)))),
      list,
    ),
  );
  void refresh();
}
