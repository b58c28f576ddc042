// The dashboard, proved in a real browser: Debian's headless Chromium,
// driven by playwright-core, against a running procgate (started by
// tests/dashboard.rs in front of a private PostgreSQL).
//
//   node e2e/dashboard.e2e.mjs --url http://127.0.0.1:PORT --token SECRET \
//        --procgate path/to/procgate --screenshots DIR
//
// Jobs "from outside" are submitted with the procgate CLI while the page is
// open, as an operator's script would. Exits non-zero on the first failed
// check, saying which; screenshots of the main states are kept in DIR.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    procgate: { type: "string" },
    screenshots: { type: "string", default: "target/dashboard-screenshots" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
for (const required of ["url", "token", "procgate"]) {
  if (!opts[required]) throw new Error(`--${required} is required`);
}
mkdirSync(opts.screenshots, { recursive: true });

/** Runs the procgate CLI against the server; returns its stdout. */
function procgate(...args) {
  return execFileSync(opts.procgate, args, {
    env: { ...process.env, PROCGATE_SERVER: opts.url, PROCGATE_TOKEN: opts.token },
    encoding: "utf8",
  }).trim();
}

const step = (what) => console.log(`dashboard e2e: ${what}`);
const shot = (page, name) => page.screenshot({ path: join(opts.screenshots, `${name}.png`), fullPage: true });
const row = (id) => `#jobs tr[data-job-id="${id}"]`;

const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  const offOrigin = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(opts.url)) offOrigin.push(r.url());
  });
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  // Which RPCs the page makes, to prove one stream and no polling.
  const rpcs = [];
  page.on("request", (r) => {
    const rpc = r.url().match(/ProcedureService\/(\w+)$/);
    if (rpc) rpcs.push(rpc[1]);
  });

  // An existing job, submitted before the page opens.
  const existing = procgate("submit", "pkg_etl.sumar", "a=40", "b=2");

  step("a wrong token shows a clear error");
  await page.goto(opts.url);
  await page.fill("#token", "not-the-token");
  await page.click("#token-form button");
  await page.locator("#banner").filter({ hasText: "The token was refused" }).waitFor();
  assert.equal(await page.locator("#jobs tbody tr").count(), 0, "no jobs are shown to a refused token");
  await shot(page, "wrong-token");

  step("the right token shows the existing jobs");
  await page.fill("#token", opts.token);
  await page.click("#token-form button");
  await page.locator(`${row(existing)}[data-state="COMPLETED"]`).waitFor();
  assert.equal(await page.locator("#banner").isHidden(), true, "the error banner goes away");
  assert.equal(
    await page.evaluate(() => sessionStorage.getItem("procgate-token")),
    opts.token,
    "the token is kept in sessionStorage",
  );

  step("one WatchJobs stream keeps the table live, with no polling");
  const before = rpcs.length;
  await page.waitForTimeout(4000);
  assert.deepEqual(rpcs.slice(before), [], `no request while idle: ${rpcs.slice(before)}`);
  assert.equal(rpcs.filter((r) => r === "WatchJob").length, 0, "no stream per row");

  step("a job submitted from outside appears and its progress bar advances");
  // Record every value the row's bar shows, as the page redraws it.
  await page.evaluate(() => {
    window.seenProgress = {};
    new MutationObserver(() => {
      for (const tr of document.querySelectorAll("#jobs tbody tr[data-job-id]")) {
        const seen = (window.seenProgress[tr.dataset.jobId] ??= []);
        const bar = tr.querySelector(".bar");
        const value = `${tr.dataset.state}|${bar.dataset.progress}|${bar.textContent}`;
        if (seen.at(-1) !== value) seen.push(value);
      }
    }).observe(document.querySelector("#jobs tbody"), { childList: true, subtree: true, attributes: true });
  });
  const long = procgate(
    "submit",
    "pkg_etl.proceso_largo",
    "p_fecha:date=2024-03-01",
    "p_pasos=5",
    "p_pausa_ms=1000",
  );
  await page.locator(row(long)).waitFor({ timeout: 10_000 });
  await page.locator(`${row(long)}[data-state="RUNNING"]`).waitFor({ timeout: 10_000 });
  await shot(page, "jobs-running");
  await page.locator(`${row(long)}[data-state="COMPLETED"]`).waitFor({ timeout: 20_000 });
  assert.equal(rpcs.filter((r) => r === "WatchJobs").length, 1, `one stream for the whole table: ${rpcs}`);
  const seen = await page.evaluate((id) => window.seenProgress[id], long);
  console.log(`dashboard e2e: the bar showed ${seen.join(" → ")}`);
  // The procedure's `progress: N cargando paso i de 5` notices.
  const reported = seen
    .map((s) => s.split("|"))
    .filter(([state, , text]) => state === "RUNNING" && /cargando paso/.test(text))
    .map(([, progress]) => Number(progress));
  assert.ok(new Set(reported).size >= 2, `two notice-reported values or more while RUNNING: ${seen.join(", ")}`);
  assert.deepEqual(reported, [...reported].sort((a, b) => a - b), "the bar only moves forward");
  assert.match(seen.at(-1), /^COMPLETED\|100\|/, "the bar ends full when COMPLETED");

  step("the detail shows params, outputs and messages");
  await page.click(row(long));
  await page.locator("#detail-state").filter({ hasText: "COMPLETED" }).waitFor();
  // The table holds jobs in the basic view; the detail reads the full job.
  await page.locator("#detail h3").filter({ hasText: "Parameters" }).waitFor();
  const detail = await page.locator("#detail").innerText();
  assert.match(detail, /p_fecha = 2024-03-01/, "the params are listed");
  assert.match(detail, /p_resultado: 5 pasos procesados para 2024-03-01/, "the outputs are shown");
  assert.match(detail, /proceso_largo: inicio para 2024-03-01/, "the messages are shown");
  assert.equal(await page.locator("#cancel").isDisabled(), true, "a finished job cannot be cancelled");

  step("Cancel on a running job turns it CANCELLED");
  const doomed = procgate(
    "submit",
    "pkg_etl.proceso_largo",
    "p_fecha:date=2024-03-02",
    "p_pasos=120",
    "p_pausa_ms=500",
  );
  await page.locator(`${row(doomed)}[data-state="RUNNING"]`).waitFor({ timeout: 10_000 });
  await page.click(row(doomed));
  await page.locator("#cancel:enabled").waitFor();
  await shot(page, "job-detail");
  await page.click("#cancel");
  await page.locator("#detail-state").filter({ hasText: "CANCELLED" }).waitFor({ timeout: 10_000 });
  await page.locator(`${row(doomed)}[data-state="CANCELLED"]`).waitFor();
  assert.match(await page.locator("#detail-error").innerText(), /^CANCELLED: /, "the detail says why it ended");
  assert.equal(JSON.parse(procgate("job", "--json", doomed)).state, "CANCELLED", "the server agrees");

  step("the form submits a call and shows its result");
  await page.fill("#procedure", "pkg_etl.sumar");
  const first = page.locator("#params .param").first();
  await first.locator(".p-name").fill("a");
  await first.locator(".p-type").selectOption({ label: "number" });
  await first.locator(".p-value").fill("1.5");
  await page.click("#add-param");
  const second = page.locator("#params .param").nth(1);
  await second.locator(".p-name").fill("b");
  await second.locator(".p-type").selectOption({ label: "number" });
  await second.locator(".p-value").fill("2");
  await page.click("#submit-form button[type=submit]");
  await page.locator("#detail-state").filter({ hasText: "COMPLETED" }).waitFor({ timeout: 20_000 });
  const outputs = await page.locator("#outputs").innerText();
  assert.match(outputs, /total: 3\.5/, "the OUT value is shown");
  assert.match(outputs, /descripcion: 1\.5 \+ 2 = 3\.5/, "every OUT value is shown");
  await shot(page, "jobs");

  step("a cursor's rows are shown as a table");
  const report = procgate("submit", "pkg_etl.reporte_ventas", "--returns", "cursor");
  await page.locator(`${row(report)}[data-state="COMPLETED"]`).waitFor({ timeout: 10_000 });
  await page.click(row(report));
  await page.locator("#outputs table th").filter({ hasText: "region" }).waitFor();
  assert.ok((await page.locator("#outputs table tbody tr").count()) >= 2, "one row per region");
  await shot(page, "job-cursor");

  step("filters narrow the table");
  await page.selectOption("#state-filter", { label: "Cancelled" });
  await page.locator(`${row(existing)}`).waitFor({ state: "detached" });
  assert.equal(await page.locator(`${row(doomed)}`).count(), 1, "the cancelled job stays");
  await page.selectOption("#state-filter", { label: "All states" });
  await page.fill("#procedure-filter", "pkg_etl.proceso_largo");
  // Both refreshes may land in either order; the table must end filtered.
  await page.locator(row(long)).waitFor();
  await page.locator(`${row(existing)}`).waitFor({ state: "detached" });
  assert.equal(await page.locator(`${row(doomed)}`).count(), 1, "every matching job is listed");

  step("a deleted job leaves the table at once");
  procgate("delete", report);
  await page.locator(row(report)).waitFor({ state: "detached", timeout: 10_000 });

  step("the schedules tab lists a schedule with its next run and last job, and pauses and resumes it");
  const schedule = JSON.parse(
    procgate("schedule", "create", "e2e-every-2s", "--cron", "*/2 * * * * *", "--json", "pkg_etl.sumar", "a=1", "b=2"),
  );
  await page.click("#tab-schedules");
  const scheduleRow = `#schedules tr[data-schedule-id="${schedule.id}"]`;
  await page.locator(scheduleRow).waitFor({ timeout: 10_000 });
  assert.equal(await page.locator("#jobs-panel").isHidden(), true, "the jobs table steps aside");
  // The first tick's job appears as the last job, with its state.
  await page.locator(`${scheduleRow} .last-job[data-state="COMPLETED"]`).waitFor({ timeout: 15_000 });
  const rowText = await page.locator(scheduleRow).innerText();
  assert.match(rowText, /e2e-every-2s/, "the name is shown");
  assert.match(rowText, /\*\/2 \* \* \* \* \*/, "the cron expression is shown");
  assert.match(rowText, /ACTIVE/, "the state is shown");
  assert.match(await page.locator(`${scheduleRow} .next-run`).innerText(), /\d/, "the next run is shown");
  // A later tick's job replaces it, live.
  const firstLast = await page.locator(`${scheduleRow} .last-job`).getAttribute("title");
  await page.waitForFunction(
    ([selector, id]) => document.querySelector(selector)?.getAttribute("title") !== id,
    [`${scheduleRow} .last-job`, firstLast],
    { timeout: 15_000 },
  );
  await shot(page, "schedules");
  await page.click(`${scheduleRow} button.toggle`);
  await page.locator(`${scheduleRow}[data-paused="true"]`).waitFor();
  assert.equal(JSON.parse(procgate("schedule", "get", "--json", schedule.id)).paused, true, "the server paused it");
  await page.click(`${scheduleRow} button.toggle`);
  await page.locator(`${scheduleRow}[data-paused="false"]`).waitFor();
  assert.equal(JSON.parse(procgate("schedule", "get", "--json", schedule.id)).paused, false, "the server resumed it");
  // Its last job opens in the jobs tab.
  await page.click(`${scheduleRow} .last-job`);
  await page.locator("#detail-state").filter({ hasText: "COMPLETED" }).waitFor({ timeout: 10_000 });
  assert.match(await page.locator("#detail").innerText(), /e2e-every-2s, tick /, "the detail names its schedule");
  procgate("schedule", "delete", schedule.id);

  step("a server that cannot be reached is said so");
  await page.route("**/procgate.v1.ProcedureService/**", (route) => route.abort("connectionrefused"));
  await page.fill("#procedure-filter", ""); // reloading finds no server
  await page.locator("#banner").filter({ hasText: "Cannot reach procgate" }).waitFor({ timeout: 10_000 });
  await shot(page, "server-down");
  await page.unroute("**/procgate.v1.ProcedureService/**");

  step("readable on a phone");
  const phone = await browser.newContext({ viewport: { width: 390, height: 800 }, isMobile: true });
  const small = await phone.newPage();
  await small.goto(opts.url);
  await small.fill("#token", opts.token);
  await small.click("#token-form button");
  await small.locator(row(existing)).waitFor();
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `nothing wider than the phone's screen (overflow ${overflow}px)`);
  await shot(small, "phone");

  assert.deepEqual(offOrigin, [], "the page fetches nothing from other origins");
  assert.deepEqual(pageErrors, [], "the page throws no errors");
  step("all checks passed");
} catch (err) {
  // What the page and the server showed when a check failed: a flake in CI
  // can then be told from a bug without running it again.
  if (page) {
    const text = async (sel) => ((await page.locator(sel).count()) ? await page.locator(sel).first().innerText() : "(none)");
    console.log(`dashboard e2e: FAILED; banner: ${await text("#banner:visible")}`);
    console.log(`dashboard e2e: detail: ${(await text("#detail:visible")).replaceAll("\n", " | ")}`);
    const rows = await page.evaluate(() => [...document.querySelectorAll("#jobs tbody tr[data-job-id]")].map((tr) => `${tr.dataset.jobId} ${tr.dataset.state}`));
    console.log(`dashboard e2e: table: ${rows.join(", ")}`);
    await shot(page, "failure").catch(() => {});
  }
  try {
    console.log(`dashboard e2e: the server's jobs:\n${procgate("jobs")}`);
  } catch (e) {
    console.log(`dashboard e2e: procgate jobs failed: ${e.message}`);
  }
  throw err;
} finally {
  await browser.close();
}
