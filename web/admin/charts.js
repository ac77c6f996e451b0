// The console's charts: a thin layer over the vendored uPlot (web/vendor/uplot, loaded before
// this module as the global `uPlot`). Each chart keeps a rolling window of samples; a sample
// of `null` is a gap (e.g. no delivery in the interval, so no latency to show).

import { h } from "/assets/common/api.js";

/** How many samples a chart keeps: five minutes at one sample every 2.5 s. */
export const WINDOW = 120;

const COLOURS = ["#1f5bd8", "#c2410c", "#137a3f", "#7c3aed"];

/**
 * A chart in a `<figure>` appended to `parent`: `title`, the series' labels, `format` for
 * values, `counts` when the values are whole numbers. Returns `{ figure, push(time, values), note(text) }`.
 */
export function chart(parent, { id, title, series, format, note, counts = false }) {
  const value = h("span", { class: "chart-value", id: `${id}-value` }, "–");
  const plot = h("div", { class: "chart-plot", role: "img", "aria-label": `${title}: no data yet` });
  const noteEl = h("p", { class: "chart-note", id: `${id}-note` }, note || "");
  const figure = h(
    "figure",
    { class: "chart card", id, "aria-labelledby": `${id}-title` },
    h("figcaption", {}, h("span", { class: "chart-title", id: `${id}-title` }, title), value),
    plot,
    noteEl,
  );
  parent.append(figure);

  const data = [[], ...series.map(() => [])];
  const width = () => Math.max(200, plot.clientWidth || figure.clientWidth - 24);
  const u = new window.uPlot(
    {
      width: width(),
      height: 160,
      legend: { show: series.length > 1 },
      cursor: { show: true, drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [
        {},
        {
          size: 72,
          values: (_u, ticks) => ticks.map(format),
          // Counts tick at whole numbers only (no "0, 1, 1" from rounded halves).
          ...(counts ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 1e5, 1e6] } : {}),
        },
      ],
      series: [
        {},
        ...series.map((label, i) => ({
          label,
          stroke: COLOURS[i % COLOURS.length],
          width: 2,
          spanGaps: false,
          value: (_u, v) => (v === null || v === undefined ? "–" : format(v)),
        })),
      ],
    },
    data,
    plot,
  );
  new ResizeObserver(() => u.setSize({ width: width(), height: 160 })).observe(figure);

  return {
    figure,
    /** Adds a sample at `time` (seconds since the epoch); `values` one per series. */
    push(time, values) {
      data[0].push(time);
      values.forEach((v, i) => data[i + 1].push(v));
      if (data[0].length > WINDOW) data.forEach((column) => column.shift());
      u.setData(data);
      const first = values[0];
      value.textContent = first === null || first === undefined ? "–" : format(first);
      const described = series
        .map((label, i) => `${label} ${values[i] === null ? "no data" : format(values[i])}`)
        .join(", ");
      plot.setAttribute("aria-label", `${title}, latest: ${described}`);
      figure.dataset.samples = String(data[0].length);
    },
    note(text) {
      noteEl.textContent = text;
    },
  };
}
