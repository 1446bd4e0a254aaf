// Debian's Chromium driven by playwright-core, and the playground's GraphiQL as a test uses it.
import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

export function launchChromium() {
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Types a query into GraphiQL's editor and runs it. */
export async function runQuery(page, query) {
  await page.evaluate((q) => {
    document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.setValue(q);
  }, query);
  await page.click(".graphiql-execute-button");
}

/** Waits until GraphiQL's result pane holds `contains` and returns the pane's text. */
export async function resultText(page, contains) {
  const handle = await page.waitForFunction((needle) => {
    const cm = document.querySelector(".graphiql-response .CodeMirror");
    const text = cm ? cm.CodeMirror.getValue() : "";
    return text.includes(needle) ? text : false;
  }, contains, { timeout: 15000 });
  return handle.jsonValue();
}

/** Waits until the element matched by selector has text matching re, and returns that text. */
export async function textOf(page, selector, re, timeout = 15000) {
  const handle = await page.waitForFunction(([sel, source, flags]) => {
    const el = document.querySelector(sel);
    return el && new RegExp(source, flags).test(el.textContent) ? el.textContent : false;
  }, [selector, re.source, re.flags], { timeout });
  return handle.jsonValue();
}
