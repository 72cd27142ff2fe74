// Lighthouse on the dashboard of a running htk, signed in: `node audit.mjs
// <base URL> <token> <out dir> <name>=<fragment>...` audits each view (e.g.
// `list=#/`) in Chromium (CHROME_PATH: Debian's) and writes <name>.json per
// view and report.html for all, then prints {"<name>": {"performance": 0.98,
// ...}} on stdout. LIGHTHOUSE_PRESET=desktop: Lighthouse's desktop preset
// (no CPU slowdown, a desktop screen), else its default, a mid-range phone.
//
// The token lives in the tab's sessionStorage, so a fresh Lighthouse run
// would only see the sign-in form: the tab is given the token before each
// document loads, as signing in would have stored it.
import { writeFileSync } from "node:fs";
import path from "node:path";

import { launch } from "chrome-launcher";
import { startFlow } from "lighthouse";
import desktopConfig from "lighthouse/core/config/desktop-config.js";
import puppeteer from "puppeteer-core";

const CATEGORIES = ["performance", "accessibility", "best-practices"];

const [base, token, out, ...views] = process.argv.slice(2);
if (!base || !token || !out || views.length === 0 || !process.env.CHROME_PATH) {
  console.error("usage: CHROME_PATH=… node audit.mjs <base URL> <token> <out dir> <name>=<fragment>…");
  process.exit(2);
}

// Launched as Lighthouse's own command line launches it (puppeteer's
// launch flags leave Lighthouse seeing no paint at all: NO_FCP).
const chrome = await launch({ chromeFlags: ["--headless=new", "--no-sandbox"] });
const browser = await puppeteer.connect({ browserURL: `http://127.0.0.1:${chrome.port}`, defaultViewport: null });
const scores = {};
try {
  const [page] = await browser.pages();
  // Before each document of this tab, Lighthouse's loads included: the
  // tab's storage holds the token, as it would after signing in.
  await page.evaluateOnNewDocument((value) => {
    if (location.protocol.startsWith("http")) sessionStorage.setItem("htk.token", value);
  }, token);
  // One flow, a navigation per view: a second flow on the same tab sees no paint.
  const preset = process.env.LIGHTHOUSE_PRESET === "desktop" ? desktopConfig : { extends: "lighthouse:default" };
  const flow = await startFlow(page, {
    config: {
      ...preset,
      settings: {
        ...preset.settings,
        onlyCategories: CATEGORIES,
        disableStorageReset: true,
        // The page streams live changes, so the network never goes quiet:
        // waiting the default 45 s for it would only lengthen the run.
        maxWaitForLoad: 15_000,
      },
    },
  });
  const names = [];
  for (const view of views) {
    const [name, fragment] = view.split(/=(.*)/s);
    names.push(name);
    // Views differ only in the fragment: from one to the next would not be a load.
    await page.goto("about:blank");
    await flow.navigate(new URL(fragment, base).href, { name });
  }
  const result = await flow.createFlowResult();
  result.steps.forEach(({ lhr }, index) => {
    const name = names[index];
    writeFileSync(path.join(out, `${name}.json`), JSON.stringify(lhr, null, 1));
    scores[name] = Object.fromEntries(CATEGORIES.map((id) => [id, lhr.categories[id].score]));
    if (lhr.runtimeError) scores[name].error = lhr.runtimeError.message;
  });
  writeFileSync(path.join(out, "report.html"), await flow.generateReport());
} finally {
  await browser.disconnect();
  chrome.kill();
}
console.log(JSON.stringify(scores));
