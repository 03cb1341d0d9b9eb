// Drive the spanstore web UI in headless Chromium (playwright-core, the system's chromium): search by service and
// by error, open a trace, check the waterfall, collapse a subtree, open a span's details; screenshots to OUT_DIR.
// Usage: node browser.mjs BASE_URL SERVICE TRACE_ID OUT_DIR  -> prints one JSON object of what it saw.
import { chromium } from "playwright-core";
import { join } from "node:path";

const [base, service, traceId, outDir] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
  ], // playwright gives every launch a fresh, temporary user data dir
});
const seen = { consoleErrors: [], dialogs: 0, cspViolations: 0 };
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") seen.consoleErrors.push(m.text()); });
  page.on("dialog", async (d) => { seen.dialogs += 1; await d.dismiss(); });
  page.on("pageerror", (e) => seen.consoleErrors.push(String(e)));

  await page.goto(base + "/");
  seen.title = await page.title();
  await page.selectOption("select[name=service]", service);
  await Promise.all([page.waitForNavigation(), page.click("form.search button[type=submit]")]);
  seen.byService = await page.$$eval("#results tbody tr[data-trace]", (rows) => rows.map((r) => r.dataset.trace));
  await page.screenshot({ path: join(outDir, "1-search-service.png"), fullPage: true });

  await page.goto(base + "/");
  await page.check("input[name=errors]");
  await Promise.all([page.waitForNavigation(), page.click("form.search button[type=submit]")]);
  seen.errorsOnly = await page.$$eval("#results tbody tr[data-trace]", (rows) => rows.map((r) => r.dataset.trace));
  seen.errorsUrl = page.url();
  await page.screenshot({ path: join(outDir, "2-search-errors.png"), fullPage: true });

  await Promise.all([page.waitForNavigation(), page.click(`#results a[href="/trace/${traceId}"]`)]);
  seen.traceUrl = page.url();
  seen.rows = await page.$$eval(".waterfall .row", (rows) => rows.map((r) => ({
    id: r.id.slice(2), depth: +r.dataset.depth, error: r.classList.contains("err"),
    marked: !!r.querySelector(".mark"), barWidth: r.querySelector("rect.bar").getBBox().width,
    visible: r.offsetParent !== null,
  })));
  await page.screenshot({ path: join(outDir, "3-trace.png"), fullPage: true });

  // Collapse the root's subtree: only the root stays visible; expand again.
  await page.click(".waterfall .row button.tog");
  seen.visibleAfterCollapse = await page.$$eval(".waterfall .row", (rows) => rows.filter((r) => r.offsetParent !== null).length);
  await page.screenshot({ path: join(outDir, "4-collapsed.png"), fullPage: true });
  await page.click(".waterfall .row button.tog");
  seen.visibleAfterExpand = await page.$$eval(".waterfall .row", (rows) => rows.filter((r) => r.offsetParent !== null).length);

  // Open the first error span's details: attributes, the exception event with its stack trace.
  const errorRow = await page.$(".waterfall .row.err button.open");
  await errorRow.click();
  seen.detailsText = await page.$eval(".details:not([hidden])", (d) => d.innerText);
  seen.stackShown = await page.$$eval(".details:not([hidden]) pre.stack", (p) => p.length);
  await page.screenshot({ path: join(outDir, "5-details.png"), fullPage: true });

  await page.goto(base + "/errors");
  seen.errorTypes = await page.$$eval("table.errtypes tbody tr", (rows) => rows.map((r) => r.cells[0].innerText));
  await page.screenshot({ path: join(outDir, "6-errors.png"), fullPage: true });

  // New traces without a reload: stay on the search page while the test sends one more trace.
  await page.goto(base + "/");
  seen.before = await page.$$eval("#results tbody tr[data-trace]", (rows) => rows.length);
  console.log(JSON.stringify({ ready: true }));
  const fresh = await page.waitForSelector("#results tbody tr.new", { timeout: 15000 }).then(() => true, () => false);
  seen.newRowAppeared = fresh;
  seen.after = await page.$$eval("#results tbody tr[data-trace]", (rows) => rows.length);
  await page.screenshot({ path: join(outDir, "7-live.png"), fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
