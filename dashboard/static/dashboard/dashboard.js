/* Draws the charts of a dashboard page with Chart.js from the JSON the view wrote
   (<script type="application/json" id="data-ID">, canvas #chart-ID).
   Colours come from CSS variables (dashboard.css, the admin's own --body-fg and
   --hairline-color), so the charts follow the admin's light/dark theme; they are drawn again
   when the theme changes (toggle or system). window.dashboardCharts maps ID -> Chart. */
(function () {
  "use strict";
  window.dashboardCharts = {};

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function withAlpha(color, alpha) {
    return `color-mix(in srgb, ${color} ${Math.round(alpha * 100)}%, transparent)`;
  }

  function config(spec) {
    const text = css("--body-fg") || "#333";
    const grid = css("--hairline-color") || "#ddd";
    const horizontal = Boolean(spec.horizontal);
    const valueAxis = horizontal ? "x" : "y";
    const categoryAxis = horizontal ? "y" : "x";
    const datasets = spec.datasets.map((series) => {
      const color = css(`--dash-c${series.color % 8}`) || "#2f6fb0";
      const line = series.type === "line";
      const dataset = {
        label: series.label,
        data: series.data,
        type: series.type || spec.type,
        backgroundColor: line ? color : withAlpha(color, series.pattern === "cost" ? 0.35 : 0.8),
        borderColor: color,
        borderWidth: line ? 2 : series.pattern === "cost" ? 1.5 : 0,
        stepped: series.stepped || false,
        pointRadius: line ? 2 : 0,
        order: series.order || 0,
      };
      if (series.stack) dataset.stack = series.stack;
      if (series.axis === "amount") dataset.yAxisID = "amount";
      return dataset;
    });
    const scales = {};
    scales[categoryAxis] = {
      stacked: Boolean(spec.stacked),
      ticks: { color: text, autoSkip: true, maxRotation: 60 },
      grid: { color: grid },
    };
    scales[valueAxis] = {
      stacked: Boolean(spec.stacked),
      beginAtZero: true,
      ticks: { color: text },
      grid: { color: grid },
      title: { display: Boolean(spec.axis), text: spec.axis || "", color: text },
    };
    if (spec.max) scales[valueAxis].max = spec.max;
    if (spec.datasets.some((series) => series.axis === "amount")) {
      scales.amount = {
        position: "right",
        beginAtZero: true,
        ticks: { color: text },
        grid: { drawOnChartArea: false },
      };
    }
    return {
      type: spec.type,
      data: { labels: spec.labels, datasets },
      options: {
        indexAxis: categoryAxis,
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "nearest", intersect: false },
        plugins: { legend: { labels: { color: text } } },
        scales,
      },
    };
  }

  function drawAll() {
    document.querySelectorAll('script[id^="data-"]').forEach((element) => {
      const id = element.id.slice("data-".length);
      const canvas = document.getElementById(`chart-${id}`);
      if (!canvas) return;
      const previous = window.dashboardCharts[id];
      if (previous) previous.destroy();
      window.dashboardCharts[id] = new Chart(canvas, config(JSON.parse(element.textContent)));
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    drawAll();
    new MutationObserver(drawAll).observe(document.documentElement, {
      attributes: true,
      attributeFilter: ["data-theme"],
    });
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", drawAll);
  });
})();
