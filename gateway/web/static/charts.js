// The traffic charts of the dashboard, a server's page and an owner's page, drawn
// with uPlot (vendored in /static/vendor: the page works with no internet).
import { api, escapeHtml } from "/static/app.js";

const COLORS = ["#0b5cad", "#a40e26", "#116329", "#6e4b00", "#6639ba", "#0a7b83", "#953800"];
const CHARTS = [
  { id: "requests", title: "Requests per minute", series: [["requests", "requests"], ["attempts", "attempts (failovers included)"]] },
  { id: "errors", title: "Error rate (%)", series: [["error_rate", "errors %"]], percent: true },
  { id: "latency", title: "Latency (ms)", series: [["latency_p50_ms", "p50"], ["latency_p95_ms", "p95"]] },
  { id: "first-token", title: "Time to first token (ms)", series: [["first_token_p50_ms", "p50"], ["first_token_p95_ms", "p95"]] },
  { id: "tokens", title: "Tokens per minute", series: [["tokens", "tokens"]] },
];
let plots = [];

function shares(series) {
  // Each model's share of each minute's requests, in percent.
  const models = Object.keys(series.models).sort();
  const totals = series.minutes.map((_, i) => models.reduce((sum, m) => sum + series.models[m][i], 0));
  return {
    names: models,
    values: models.map((m) => series.models[m].map((n, i) => (totals[i] ? Math.round((1000 * n) / totals[i]) / 10 : null))),
  };
}

function figureFor(root, id, title, names, ys, windowName) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.innerHTML = `<figcaption id="chart-${id}-title">${escapeHtml(title)}</figcaption>
    <div class="plot" role="img" aria-labelledby="chart-${id}-title" aria-describedby="chart-${id}-summary"></div>
    <p class="sr" id="chart-${id}-summary"></p>`;
  root.append(figure);
  const last = ys.map((values) => values.filter((v) => v != null).at(-1));
  figure.querySelector(".sr").textContent = `Last ${windowName}: ` + names.map((n, i) => `${n} ${last[i] ?? "no data"}`).join(", ");
  return figure;
}

// A percentage axis starts at 0 and never passes 100 (uPlot's own range pads a flat
// 100 % line up to 200 %); below that it fits the data, in steps of 5.
const PERCENT_RANGE = (u, min, max) => [0, Math.min(100, Math.max(5, Math.ceil((1.1 * (max ?? 0)) / 5) * 5))];

function plot(figure, names, xs, ys, percent) {
  const width = Math.max(240, figure.clientWidth - 18);  // the grid cell it was given
  const options = {
    width, height: 180,
    series: [{}, ...names.map((name, i) => ({
      label: name, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false,
      points: { show: true, size: 5 },  // a lone minute with traffic shows as a dot
    }))],
    axes: [{ stroke: "#57606a" }, { stroke: "#57606a", size: 56 }],
    scales: percent ? { x: { time: true }, y: { range: PERCENT_RANGE } } : { x: { time: true } },
    legend: { live: false },
    cursor: { show: true },
  };
  plots.push(new window.uPlot(options, [xs, ...ys], figure.querySelector(".plot")));
}

/** Draw the charts of /admin/stats?window=…&<filter> into `root`; returns the statistics.
 * `pick` chooses the series: the servers' (default) or a key's (`s => s.clients.series`,
 * which has no failovers nor first tokens: those lines and charts are left out). With a
 * host's `token`, the gateway answers that registration's figures only. */
export async function drawCharts(
  root, windowName, filter = "", pick = (stats) => stats.series, token = "",
) {
  const stats = await api(`/admin/stats?window=${encodeURIComponent(windowName)}${filter}`, { token });
  for (const old of plots) old.destroy();
  plots = [];
  root.innerHTML = "";
  const series = pick(stats);
  const charts = CHARTS.map((chart) => {
    const lines = chart.series.filter(([key]) => key in series);
    return {
      id: chart.id, title: chart.title,
      names: lines.map(([, name]) => name), values: lines.map(([key]) => series[key]),
      percent: Boolean(chart.percent),
    };
  }).filter((chart) => chart.names.length);
  const share = shares(series);
  if (share.names.length) charts.push({ id: "share", title: "Each model's share of requests (%)", names: share.names, values: share.values, percent: true });
  // Every figure in the grid first, so each is measured at its final width.
  const figures = charts.map((c) => figureFor(root, c.id, c.title, c.names, c.values, windowName));
  charts.forEach((c, i) => plot(figures[i], c.names, series.minutes, c.values, c.percent));
  return stats;
}
