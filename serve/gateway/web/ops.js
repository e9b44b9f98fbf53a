// The operations page: polls GET /ops/state (admin key) and shows the variants with their live
// traffic, the A/B analysis as it stands, the promotion history, and a form for PUT /admin/split.
import { call, element, explain, percent, setUpKeyForm } from "./common.js";

const REFRESH_MS = 2000;
const WINDOW_S = 30; // rates and percentiles over the snapshots of about this long

const $ = (id) => document.getElementById(id);
let snapshots = []; // [{time, traffic}], oldest first, for rates over the window
let timer = null;
let splitAliases = "";

// The q-quantile of the latency in seconds between two cumulative histograms (as Prometheus's
// histogram_quantile: linear within a bucket); null without requests in between.
function quantile(q, now, before) {
  const deltas = now.map(([bound, count], i) => [bound, count - (before ? before[i][1] : 0)]);
  const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [bound, count] of deltas) {
    if (count >= rank) {
      if (bound === null) return lower;
      return lower + ((bound - lower) * (rank - below)) / Math.max(count - below, 1e-9);
    }
    lower = bound ?? lower;
    below = count;
  }
  return lower;
}

const ms = (seconds) => (seconds === null ? "–" : `${(1000 * seconds).toFixed(1)} ms`);
const cell = (text) => element("td", text === null || text === undefined ? "–" : String(text));

function renderVariants(state) {
  const now = { time: state.time, traffic: state.traffic };
  snapshots.push(now);
  while (snapshots.length > 2 && now.time - snapshots[1].time >= WINDOW_S) snapshots.shift();
  const before = snapshots.length > 1 ? snapshots[0] : null;
  const seconds = before ? now.time - before.time : null;
  $("window").textContent = seconds ? `${Math.round(seconds)} s` : "… (a second reading is needed)";
  $("updated").textContent = `updated ${new Date(1000 * state.time).toLocaleTimeString()}`;
  $("model").textContent = state.model;
  const rows = state.variants.map((variant) => {
    const current = state.traffic[variant.alias];
    const earlier = before?.traffic[variant.alias];
    const requests = current && seconds ? current.requests - (earlier?.requests ?? 0) : null;
    const errors = current && seconds ? current.errors - (earlier?.errors ?? 0) : null;
    const row = element("tr");
    row.dataset.alias = variant.alias;
    row.append(
      element("th", variant.alias),
      cell(variant.version),
      cell(state.split[variant.alias]),
      cell(variant.last_error ? `${variant.state} (${variant.last_error})` : variant.state),
      cell(state.backend_workers),
      cell(variant.in_flight),
      cell(requests === null ? null : (requests / seconds).toFixed(1)),
      cell(requests ? percent(errors / requests) : errors === null ? null : "0"),
      cell(current && seconds ? ms(quantile(0.5, current.buckets, earlier?.buckets)) : null),
      cell(current && seconds ? ms(quantile(0.99, current.buckets, earlier?.buckets)) : null),
      cell(variant.restarts),
    );
    row.firstChild.scope = "row";
    return row;
  });
  $("variants").tBodies[0].replaceChildren(...rows);
}

function renderSplit(split) {
  const aliases = Object.keys(split).sort().join(",");
  const fields = $("split-fields");
  if (aliases !== splitAliases) {
    splitAliases = aliases;
    fields.replaceChildren(
      ...Object.keys(split)
        .sort()
        .map((alias) => {
          const label = element("label", `${alias} `);
          const input = element("input");
          Object.assign(input, { type: "number", min: "0", step: "any", name: alias, required: true });
          input.id = `weight-${alias}`;
          label.htmlFor = input.id;
          return [label, input];
        })
        .flat(),
    );
  }
  for (const input of fields.querySelectorAll("input")) {
    // What a person is typing is not overwritten by the next refresh.
    if (document.activeElement !== input && !input.dataset.edited) input.value = split[input.name];
  }
}

function renderAbtest(state) {
  const report = state.abtest;
  const body = $("arms").tBodies[0];
  if (!report) {
    $("decision").textContent = "No A/B test: the split has no challenger.";
    body.replaceChildren();
    $("sequential").textContent = "";
    $("reasons").replaceChildren();
    return;
  }
  const decisions = { "keep testing": "Keep testing", promote: "Promote the challenger", rollback: "Roll the challenger back" };
  $("decision").textContent = `Decision: ${decisions[report.decision] ?? report.decision}`;
  body.replaceChildren(
    ...[report.champion, report.challenger].map((arm) => {
      const accuracy = arm.accuracy === null ? "–" : `${percent(arm.accuracy)} [${percent(arm.ci95[0])}, ${percent(arm.ci95[1])}]`;
      const latency = arm.p50_ms === null ? "–" : `${arm.p50_ms.toFixed(1)} / ${arm.p99_ms.toFixed(1)} ms`;
      const uncertain = arm.uncertain === null ? "–" : percent(arm.uncertain);
      const row = element("tr");
      row.append(element("th", arm.variant), cell(arm.version), cell(arm.requests), cell(arm.errors), cell(uncertain), cell(arm.feedback), cell(accuracy), cell(latency));
      return row;
    }),
  );
  const test = report.sequential;
  $("sequential").textContent = test
    ? `Sequential test (${report.test}): log Λ ${test.max_log_lambda.toFixed(2)} against the threshold ${state.abtest_threshold.toFixed(2)}` +
      (test.crossed ? `, crossed after ${test.at_sample} observations.` : ": not crossed.")
    : "";
  $("reasons").replaceChildren(...report.reasons.map((reason) => element("li", reason)));
}

function renderHistory(state) {
  $("history-status").textContent = state.history_error ?? (state.history.length ? "" : "No promotion recorded yet.");
  $("history").tBodies[0].replaceChildren(
    ...state.history.map((event) => {
      const row = element("tr");
      const versions = `${event.from_version ?? "–"} → ${event.to_version ?? "removed"}`;
      row.append(cell(event.time.replace("T", " ").slice(0, 19)), cell(event.action), cell(event.alias), cell(versions), cell(event.actor), cell(event.reason));
      return row;
    }),
  );
}

async function refresh() {
  clearTimeout(timer);
  try {
    const { payload } = await call("/ops/state");
    $("status").textContent = "";
    renderVariants(payload);
    renderSplit(payload.split);
    renderAbtest(payload);
    renderHistory(payload);
    document.body.dataset.loaded = "true";
  } catch (error) {
    $("status").textContent = explain(error);
  } finally {
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

async function applySplit(event) {
  event.preventDefault();
  const weights = {};
  for (const input of $("split-fields").querySelectorAll("input")) weights[input.name] = Number(input.value);
  try {
    const { payload } = await call("/admin/split", { method: "PUT", body: weights });
    $("split-status").textContent = `Split applied: ${JSON.stringify(payload.split)}`;
    for (const input of $("split-fields").querySelectorAll("input")) delete input.dataset.edited;
  } catch (error) {
    $("split-status").textContent = explain(error);
  }
  refresh();
}

setUpKeyForm(() => {
  snapshots = [];
  refresh();
});
$("split-fields").addEventListener("input", (event) => {
  event.target.dataset.edited = "true";
});
$("split-form").addEventListener("submit", applySplit);
refresh();
