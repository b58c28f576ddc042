// The procgate jobs dashboard: one ListJobs page for the table, then one
// WatchJobs stream that keeps it live (new jobs appear, rows move as the
// procedures report, deleted jobs go) with no polling and one connection
// whatever the number of rows; a detail panel with Cancel, and a form to
// submit calls. A stream that drops resumes from the last revision it saw,
// so nothing is missed. The schedules tab lists the schedules with their
// next run and last job, pauses and resumes them, and, while it is open,
// follows their jobs on a WatchJobs stream of its own and reads the list
// again when the next tick is due. Everything is gRPC-Web through
// @connectrpc/connect-web, with the stubs generated from proto/ by
// protoc-gen-es; the bearer token is kept in sessionStorage.

import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import {
  Direction,
  type Job,
  type JobEvent,
  JobEventType,
  JobState,
  JobView,
  type Param,
  ParamSchema,
  ProcedureService,
  type ResultSet,
  type Schedule,
  type Value,
  ValueSchema,
  ValueType,
} from "./gen/procgate/v1/procgate_pb";

const TOKEN_KEY = "procgate-token";
/** How long to wait before reopening a stream that ended or failed. */
const RECONNECT_MS = 2000;

const withToken: Interceptor = (next) => async (req) => {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const client = createClient(
  ProcedureService,
  createGrpcWebTransport({ baseUrl: location.origin, interceptors: [withToken] }),
);

// The table's jobs in the basic view (no params, outputs or messages), as
// ListJobs and WatchJobs send them; the selected one is also read in full.
const jobs = new Map<string, Job>();
let selected: string | undefined;
let detail: Job | undefined;

const $ = <T extends HTMLElement>(selector: string) => document.querySelector(selector) as T;
const tbody = $<HTMLTableSectionElement>("#jobs tbody");

function el(tag: string, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElement {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

const stateName = (s: JobState) => JobState[s] ?? "UNKNOWN";

/** gRPC's own names for its codes, as the CLI and the docs print them. */
const GRPC_CODES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];
const codeName = (code: number) => GRPC_CODES[code] ?? `code ${code}`;
const isLive = (j: Job) => j.state === JobState.PENDING || j.state === JobState.RUNNING;

// ---- errors ----

function explain(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.Unauthenticated) {
    return `The token was refused (${e.rawMessage}). Enter a valid token above.`;
  }
  // fetch() itself failing (a TypeError) means no answer came at all.
  if (e.code === Code.Unavailable || e.cause instanceof TypeError) {
    return `Cannot reach procgate at ${location.origin}: is the server running? (${e.rawMessage})`;
  }
  const db = e.metadata.get("procgate-db-code");
  return `${codeName(e.code)}: ${e.rawMessage}${db ? ` (db code ${db})` : ""}`;
}

function showError(err: unknown) {
  const banner = $("#banner");
  banner.textContent = explain(err);
  banner.hidden = false;
}

function clearError() {
  $("#banner").hidden = true;
}

// ---- values ----

function valueText(v: Value | undefined): string {
  const k = v?.kind;
  if (!k) return "NULL";
  switch (k.case) {
    case undefined:
    case "nullValue":
      return "NULL";
    case "timestampValue":
      return timestampDate(k.value).toISOString();
    case "bytesValue":
      return "0x" + Array.from(k.value, (b) => b.toString(16).padStart(2, "0")).join("");
    case "rowsValue":
      return `(${k.value.rows.length} rows)`;
    default:
      return String(k.value);
  }
}

function rowsTable(set: ResultSet): HTMLElement {
  const head = el("tr", {}, ...set.columns.map((c) => el("th", {}, c.name)));
  const rows = set.rows.map((r) => el("tr", {}, ...r.values.map((v) => el("td", {}, valueText(v)))));
  const table = el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
  return set.truncated ? el("div", {}, table, el("p", { class: "muted" }, "truncated at the server's row cap")) : table;
}

function parseValue(type: ValueType, text: string): Value {
  const kind = ((): Value["kind"] => {
    switch (type) {
      case ValueType.INTEGER:
        return { case: "integerValue", value: BigInt(text) };
      case ValueType.NUMBER:
        return { case: "numberValue", value: text };
      case ValueType.FLOAT:
        return { case: "floatValue", value: Number(text) };
      case ValueType.BOOLEAN:
        return { case: "boolValue", value: /^(true|t|yes|y|1)$/i.test(text) };
      case ValueType.DATE:
        return { case: "dateValue", value: text };
      case ValueType.TIMESTAMP:
        return { case: "timestampValue", value: timestampFromDate(new Date(text)) };
      case ValueType.JSON:
        return { case: "jsonValue", value: text };
      case ValueType.BYTES: {
        const hex = text.replace(/^0x/, "");
        return { case: "bytesValue", value: Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16)) };
      }
      default:
        return { case: "stringValue", value: text };
    }
  })();
  return create(ValueSchema, { kind });
}

// ---- the table ----

function elapsed(job: Job): string {
  const start = job.startTime ? timestampDate(job.startTime) : job.createTime ? timestampDate(job.createTime) : undefined;
  if (!start) return "";
  const end = job.endTime ? timestampDate(job.endTime) : new Date();
  const seconds = Math.max(0, (end.getTime() - start.getTime()) / 1000);
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

// Running with no progress of its own yet: the milestones before the
// procedure's code runs stay at or below 2 %.
const INDETERMINATE_MAX = 2;

function isIndeterminate(job: Job): boolean {
  return job.state === JobState.RUNNING && job.progress <= INDETERMINATE_MAX;
}

function progressText(job: Job): string {
  return isIndeterminate(job) ? `running… ${job.progressMessage}` : `${job.progress}% ${job.progressMessage}`;
}

function progressBar(job: Job): HTMLElement {
  const kind = job.state === JobState.COMPLETED ? "done" : job.state === JobState.FAILED ? "bad" : job.state === JobState.CANCELLED ? "stopped" : isIndeterminate(job) ? "indeterminate" : "";
  const bar = el("div", { class: `bar ${kind}`, "data-progress": String(job.progress) });
  const fill = el("i");
  fill.style.width = isIndeterminate(job) ? "100%" : `${job.progress}%`;
  bar.append(fill, el("span", {}, progressText(job)));
  return bar;
}

function renderRow(job: Job): HTMLTableRowElement {
  const row = el(
    "tr",
    { "data-job-id": job.id, "data-state": stateName(job.state) },
    el("td", {}, el("span", { class: `badge ${stateName(job.state)}` }, stateName(job.state))),
    el("td", { title: job.procedure }, job.procedure),
    el("td", {}, progressBar(job)),
    el("td", { class: "elapsed" }, elapsed(job)),
    el("td", {}, job.owner || "–"),
  ) as HTMLTableRowElement;
  if (job.id === selected) row.classList.add("selected");
  row.addEventListener("click", () => select(job.id));
  return row;
}

// The revision taken at submit orders jobs strictly, as ListJobs does.
function newestFirst(a: Job, b: Job): number {
  return a.createRevision === b.createRevision ? 0 : a.createRevision < b.createRevision ? 1 : -1;
}

function render() {
  const rows = [...jobs.values()].sort(newestFirst).map(renderRow);
  tbody.replaceChildren(...rows);
  $("#empty").hidden = rows.length > 0;
  renderDetail();
}

function upsert(job: Job) {
  const known = jobs.get(job.id);
  // The stream may have shown a newer snapshot than a late answer.
  if (known && known.revision > job.revision) return;
  jobs.set(job.id, job);
  const existing = tbody.querySelector(`tr[data-job-id="${job.id}"]`);
  if (existing) {
    existing.replaceWith(renderRow(job));
    if (job.id === selected) {
      renderDetail();
      void loadDetail(job.id, job.revision);
    }
  } else {
    render();
  }
}

// ---- live updates ----

type Filter = { states: JobState[]; procedure: string };

function currentFilter(): Filter {
  const state = Number(($("#state-filter") as HTMLSelectElement).value);
  const procedure = ($("#procedure-filter") as HTMLInputElement).value.trim();
  return { states: state ? [state] : [], procedure };
}

function matches(job: Job, filter: Filter): boolean {
  return (
    (filter.states.length === 0 || filter.states.includes(job.state)) &&
    (filter.procedure === "" || job.procedure.toLowerCase() === filter.procedure.toLowerCase())
  );
}

function remove(id: string) {
  if (jobs.delete(id)) render();
}

function apply(event: JobEvent, filter: Filter) {
  const job = event.job;
  switch (event.type) {
    case JobEventType.EXISTING:
    case JobEventType.CHANGED:
      // A job that left the filter (a RUNNING one that ended) leaves the table.
      if (job && matches(job, filter)) upsert(job);
      else if (job) remove(job.id);
      break;
    case JobEventType.DELETED:
      if (job) remove(job.id);
      break;
    default:
      break; // SYNCED: everything before it has been applied
  }
}

const pause = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

// The one live view: aborted and replaced when the filter or token changes.
let view: AbortController | undefined;

/** Fills the table from one ListJobs page, then keeps it live: from the
 * page's newest revision, or, when the server can no longer resume from
 * there, from now (its live jobs, then what changes). */
async function reload(resume = true) {
  view?.abort();
  const abort = new AbortController();
  view = abort;
  const filter = currentFilter();
  try {
    const page = await client.listJobs({ ...filter, pageSize: 200 }, { signal: abort.signal });
    if (abort.signal.aborted) return;
    clearError();
    jobs.clear();
    for (const job of page.jobs) jobs.set(job.id, job);
    render();
    // Resume after the newest change the page shows: every later one is
    // replayed, so nothing falls between the page and the stream.
    const newest = page.jobs.reduce((max, j) => (j.revision > max ? j.revision : max), 0n);
    await follow(filter, resume ? newest : 0n, abort.signal);
  } catch (err) {
    if (!abort.signal.aborted) showError(err);
  }
}

/** Applies WatchJobs events, reopening the stream from the last revision
 * seen whenever it drops; a revision the server can no longer resume from
 * reloads the table. */
async function follow(filter: Filter, since: bigint, signal: AbortSignal) {
  let resumeFrom = since;
  while (!signal.aborted) {
    try {
      for await (const event of client.watchJobs({ ...filter, sinceRevision: resumeFrom }, { signal })) {
        clearError();
        apply(event, filter);
        if (event.revision > resumeFrom) resumeFrom = event.revision;
      }
    } catch (err) {
      if (signal.aborted) return;
      if (ConnectError.from(err).code === Code.FailedPrecondition) {
        void reload(false);
        return;
      }
      showError(err);
    }
    await pause(RECONNECT_MS, signal);
  }
}

// ---- detail ----

function select(id: string) {
  selected = id;
  detail = undefined;
  render();
  void loadDetail(id, 0n);
}

/** Shows a job that may not be in the table (a schedule's last job). */
async function open(id: string) {
  showTab("jobs");
  if (jobs.has(id)) return select(id);
  try {
    const job = await client.getJob({ id });
    selected = id;
    detail = job;
    upsert(job);
  } catch (err) {
    showError(err);
  }
}

/** Reads the selected job in full (GetJob), unless what is shown is as new. */
async function loadDetail(id: string, revision: bigint) {
  if (detail && detail.id === id && detail.revision >= revision) return;
  try {
    const full = await client.getJob({ id });
    if (selected !== id || (detail && detail.id === id && detail.revision >= full.revision)) return;
    detail = full;
    renderDetail();
  } catch (err) {
    showError(err);
  }
}

function renderDetail() {
  const panel = $("#detail");
  const basic = selected ? jobs.get(selected) : undefined;
  if (!basic) {
    panel.hidden = true;
    return;
  }
  // Params, outputs and messages come with the full view.
  const job = detail && detail.id === basic.id && detail.revision >= basic.revision ? detail : { ...basic, params: detail?.params ?? [], outputs: detail?.outputs ?? {}, returnValue: detail?.returnValue, messages: detail?.messages ?? [] };
  panel.hidden = false;
  const cancel = el("button", { id: "cancel", type: "button" }, "Cancel") as HTMLButtonElement;
  cancel.disabled = !isLive(job) || job.cancelRequested;
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      upsert(await client.cancelJob({ id: job.id }));
    } catch (err) {
      showError(err);
    }
  });
  const params = job.params.map((p) =>
    el("li", {}, p.value ? `${p.name} = ${valueText(p.value)}` : `${p.name} (${Direction[p.direction]})`),
  );
  const outputs = Object.entries(job.outputs);
  const outputList = el(
    "div",
    { id: "outputs" },
    ...outputs.map(([name, v]) =>
      v.kind.case === "rowsValue" ? el("div", {}, el("strong", {}, name), rowsTable(v.kind.value)) : el("div", {}, el("strong", {}, `${name}: `), valueText(v)),
    ),
  );
  if (job.returnValue) {
    const v = job.returnValue;
    outputList.append(v.kind.case === "rowsValue" ? rowsTable(v.kind.value) : el("div", {}, el("strong", {}, "returns: "), valueText(v)));
  }
  const children: Node[] = [
    el("h2", {}, job.procedure),
    el(
      "dl",
      {},
      el("dt", {}, "State"),
      el("dd", { id: "detail-state" }, stateName(job.state) + (job.cancelRequested && isLive(job) ? " (cancelling)" : "")),
      el("dt", {}, "Progress"),
      el("dd", {}, progressText(job)),
      el("dt", {}, "Job"),
      el("dd", { class: "muted" }, job.id),
      el("dt", {}, "Elapsed"),
      el("dd", {}, elapsed(job)),
      ...(job.maxAttempts > 1 ? [el("dt", {}, "Attempt"), el("dd", { id: "detail-attempt" }, `${job.attempt} of ${job.maxAttempts}`)] : []),
      ...(job.scheduleId
        ? [el("dt", {}, "Schedule"), el("dd", { class: "muted" }, `${schedules.get(job.scheduleId)?.name ?? job.scheduleId}, tick ${job.scheduledTime ? timestampDate(job.scheduledTime).toISOString() : ""}`)]
        : []),
    ),
  ];
  if (job.error) {
    const db = job.error.dbCode ? ` (db code ${job.error.dbCode})` : "";
    children.push(el("div", { class: "error", id: "detail-error" }, `${codeName(job.error.code)}: ${job.error.message}${db}`));
  }
  if (job.attemptErrors.length) {
    const failed = job.attemptErrors.map((e) =>
      el("li", {}, `${e.time ? timestampDate(e.time).toLocaleTimeString() : ""} ${codeName(e.code)}: ${e.message}${e.dbCode ? ` (db code ${e.dbCode})` : ""}`),
    );
    children.push(el("h3", {}, "Failed attempts"), el("ul", { id: "detail-attempts" }, ...failed));
  }
  if (params.length) children.push(el("h3", {}, "Parameters"), el("ul", {}, ...params));
  if (outputs.length || job.returnValue) children.push(el("h3", {}, "Outputs"), outputList);
  if (job.messages.length) children.push(el("h3", {}, "Messages"), el("ul", {}, ...job.messages.map((m) => el("li", {}, m))));
  children.push(el("div", { class: "row" }, cancel));
  panel.replaceChildren(...children);
}

// ---- the submit form ----

function addParamRow() {
  const types = Object.entries(ValueType).filter(([, v]) => typeof v === "number") as [string, number][];
  const row = el(
    "div",
    { class: "param" },
    el("input", { placeholder: "name", "aria-label": "Parameter name", class: "p-name" }),
    el("select", { class: "p-direction", "aria-label": "Direction" }, ...["IN", "OUT", "IN_OUT"].map((d, i) => el("option", { value: String(i + 1) }, d.replace("_", " ")))),
    el("select", { class: "p-type", "aria-label": "Type" }, ...types.map(([name, v]) => el("option", { value: String(v) }, v === 0 ? "any" : name.toLowerCase()))),
    el("input", { placeholder: "value", "aria-label": "Value", class: "p-value" }),
    el("button", { type: "button", "aria-label": "Remove parameter" }, "×"),
  );
  row.querySelector("button")!.addEventListener("click", () => row.remove());
  $("#params").append(row);
}

async function submit(event: Event) {
  event.preventDefault();
  const params: Param[] = [];
  for (const row of document.querySelectorAll<HTMLElement>("#params .param")) {
    const name = (row.querySelector(".p-name") as HTMLInputElement).value.trim();
    if (!name) continue;
    const direction = Number((row.querySelector(".p-direction") as HTMLSelectElement).value) as Direction;
    const type = Number((row.querySelector(".p-type") as HTMLSelectElement).value) as ValueType;
    const text = (row.querySelector(".p-value") as HTMLInputElement).value;
    params.push(
      create(ParamSchema, {
        name,
        direction,
        type,
        value: direction === Direction.OUT ? undefined : parseValue(type, text),
      }),
    );
  }
  try {
    const job = await client.submitAsync({
      call: {
        procedure: ($("#procedure") as HTMLInputElement).value.trim(),
        params,
        returns: Number(($("#returns") as HTMLSelectElement).value),
      },
    });
    clearError();
    selected = job.id;
    detail = job;
    upsert(job); // the stream brings its changes
    // A quick job's changes can come down the stream before this answer,
    // which upsert then ignores as older: show the selection anyway, and
    // read in full what the stream is ahead with.
    render();
    void loadDetail(job.id, jobs.get(job.id)?.revision ?? job.revision);
  } catch (err) {
    showError(err);
  }
}

// ---- schedules ----

const schedules = new Map<string, Schedule>();
// Each schedule's last job (basic view), as GetJob and the stream show it;
// null once it was deleted.
const lastJobs = new Map<string, Job | null>();
const scheduleBody = $<HTMLTableSectionElement>("#schedules tbody");
// The schedules tab's stream and timer: aborted when the tab closes.
let scheduleView: AbortController | undefined;
let nextRead: ReturnType<typeof setTimeout> | undefined;
/** The list is read again at most this often, however fast the ticks. */
const MIN_REREAD_MS = 2000;

function whenText(t: Schedule["nextRunTime"]): string {
  if (!t) return "–";
  const at = timestampDate(t);
  const seconds = Math.round((at.getTime() - Date.now()) / 1000);
  const relative = seconds <= 0 ? "due" : seconds < 90 ? `in ${seconds} s` : seconds < 5400 ? `in ${Math.round(seconds / 60)} min` : `in ${Math.round(seconds / 3600)} h`;
  return `${at.toLocaleString()} (${relative})`;
}

function renderScheduleRow(schedule: Schedule): HTMLTableRowElement {
  const state = schedule.paused ? "PAUSED" : "ACTIVE";
  const toggle = el("button", { type: "button", class: "toggle" }, schedule.paused ? "Resume" : "Pause") as HTMLButtonElement;
  toggle.addEventListener("click", () => void setPaused(schedule, !schedule.paused, toggle));
  const last = lastJobs.get(schedule.lastJobId);
  const lastCell = !schedule.lastJobId
    ? el("td", { class: "muted" }, "none yet")
    : last
      ? el("td", { class: "last-job", title: schedule.lastJobId, "data-state": stateName(last.state) }, el("span", { class: `badge small ${stateName(last.state)}` }, stateName(last.state)), ` ${schedule.lastJobId.slice(0, 8)}`)
      : el("td", { class: "muted", title: schedule.lastJobId }, `${schedule.lastJobId.slice(0, 8)} (deleted)`);
  if (last) lastCell.addEventListener("click", () => void open(schedule.lastJobId));
  const procedure = schedule.call?.procedure ?? "";
  return el(
    "tr",
    { "data-schedule-id": schedule.id, "data-paused": String(schedule.paused) },
    el("td", { title: `${schedule.name}: ${procedure}` }, el("strong", {}, schedule.name), el("div", { class: "muted" }, procedure)),
    el("td", { title: schedule.cron }, el("code", {}, schedule.cron), el("div", { class: "muted" }, schedule.timeZone)),
    el("td", { class: "next-run" }, schedule.paused ? "–" : whenText(schedule.nextRunTime)),
    el("td", {}, el("span", { class: `badge small ${state}` }, state)),
    lastCell,
    el("td", {}, toggle),
  ) as HTMLTableRowElement;
}

// ListSchedules answers newest first; so does the table.
function renderSchedules() {
  const rows = [...schedules.values()].map(renderScheduleRow);
  scheduleBody.replaceChildren(...rows);
  $("#schedules-empty").hidden = rows.length > 0;
  planReread();
}

/** Reads the list again just after the earliest next tick is due. */
function planReread() {
  clearTimeout(nextRead);
  if (!scheduleView || scheduleView.signal.aborted) return;
  const due = [...schedules.values()].filter((s) => !s.paused && s.nextRunTime).map((s) => timestampDate(s.nextRunTime!).getTime());
  if (!due.length) return;
  const wait = Math.max(MIN_REREAD_MS, Math.min(...due) + 500 - Date.now());
  nextRead = setTimeout(() => void loadSchedules(), wait);
}

async function readLastJob(id: string) {
  if (!id || lastJobs.has(id)) return;
  try {
    lastJobs.set(id, await client.getJob({ id, view: JobView.BASIC }));
  } catch (err) {
    if (ConnectError.from(err).code !== Code.NotFound) throw err;
    lastJobs.set(id, null);
  }
}

async function loadSchedules() {
  try {
    const page = await client.listSchedules({ pageSize: 200 });
    clearError();
    await Promise.all(page.schedules.map((s) => readLastJob(s.lastJobId)));
    schedules.clear();
    for (const schedule of page.schedules) schedules.set(schedule.id, schedule);
    renderSchedules();
  } catch (err) {
    showError(err);
  }
}

async function refreshSchedule(id: string) {
  try {
    const schedule = await client.getSchedule({ id });
    await readLastJob(schedule.lastJobId);
    schedules.set(id, schedule);
    renderSchedules();
  } catch (err) {
    if (ConnectError.from(err).code === Code.NotFound) {
      schedules.delete(id);
      renderSchedules();
    } else showError(err);
  }
}

async function setPaused(schedule: Schedule, paused: boolean, button: HTMLButtonElement) {
  button.disabled = true;
  try {
    const updated = await client.updateSchedule({ schedule: { id: schedule.id, paused }, updateMask: { paths: ["paused"] } });
    clearError();
    schedules.set(updated.id, updated);
    renderSchedules();
  } catch (err) {
    button.disabled = false;
    showError(err);
  }
}

/** Follows the jobs of every schedule while the tab is open: a job's change
 * redraws its schedule's last job, and a job a tick just started reads its
 * schedule again (new last job, next run). */
async function followSchedules(signal: AbortSignal) {
  let resumeFrom = 0n;
  while (!signal.aborted) {
    try {
      for await (const event of client.watchJobs({ sinceRevision: resumeFrom, view: JobView.BASIC }, { signal })) {
        if (event.revision > resumeFrom) resumeFrom = event.revision;
        const job = event.job;
        if (!job?.scheduleId) continue;
        if (event.type === JobEventType.DELETED) {
          if (lastJobs.has(job.id)) lastJobs.set(job.id, null);
          renderSchedules();
          continue;
        }
        lastJobs.set(job.id, job);
        // A job newer than the schedule's last one: a tick just started it.
        const schedule = schedules.get(job.scheduleId);
        const last = schedule && lastJobs.get(schedule.lastJobId);
        if (schedule && schedule.lastJobId !== job.id && (!last || last.createRevision < job.createRevision)) {
          void refreshSchedule(job.scheduleId);
        } else renderSchedules();
      }
    } catch (err) {
      if (signal.aborted) return;
      if (ConnectError.from(err).code === Code.FailedPrecondition) {
        resumeFrom = 0n;
        void loadSchedules();
        continue;
      }
      showError(err);
    }
    await pause(RECONNECT_MS, signal);
  }
}

// ---- tabs ----

function showTab(tab: "jobs" | "schedules") {
  document.body.dataset.tab = tab;
  $("#tab-jobs").setAttribute("aria-selected", String(tab === "jobs"));
  $("#tab-schedules").setAttribute("aria-selected", String(tab === "schedules"));
  $("#schedules-panel").hidden = tab !== "schedules";
  $("#jobs-panel").hidden = tab !== "jobs";
  if (tab === "schedules") {
    if (scheduleView && !scheduleView.signal.aborted) return;
    scheduleView = new AbortController();
    void loadSchedules();
    void followSchedules(scheduleView.signal);
  } else {
    scheduleView?.abort();
    clearTimeout(nextRead);
  }
}

// ---- start ----

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ($("#token") as HTMLInputElement).value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  jobs.clear();
  render();
  void reload();
  if (document.body.dataset.tab === "schedules") {
    scheduleView?.abort();
    lastJobs.clear();
    showTab("schedules");
  }
});
$("#tab-jobs").addEventListener("click", () => showTab("jobs"));
$("#tab-schedules").addEventListener("click", () => showTab("schedules"));
$("#state-filter").addEventListener("change", () => void reload());
$("#procedure-filter").addEventListener("input", () => void reload());
$("#add-param").addEventListener("click", addParamRow);
$("#submit-form").addEventListener("submit", (e) => void submit(e));
($("#token") as HTMLInputElement).value = sessionStorage.getItem(TOKEN_KEY) ?? "";
addParamRow();
void reload();
setInterval(() => {
  for (const cell of tbody.querySelectorAll<HTMLElement>("tr[data-state=RUNNING] .elapsed")) {
    const job = jobs.get(cell.parentElement!.dataset.jobId!);
    if (job) cell.textContent = elapsed(job);
  }
  for (const cell of scheduleBody.querySelectorAll<HTMLElement>("tr[data-paused=false] .next-run")) {
    const schedule = schedules.get(cell.parentElement!.dataset.scheduleId!);
    if (schedule) cell.textContent = whenText(schedule.nextRunTime);
  }
}, 1000);
