/* The dashboard's charts (hub.http.dashboard). The page is server-rendered and complete
 * without this script: it only draws the two charts from the JSON block #dashboard-data
 * with the vendored Chart.js (web/static/vendor/chartjs), loaded before it (both defer).
 * No inline script, no eval, no other origin: the page's policy allows none of them.
 * Amounts come in the currency's major unit; Intl formats them in the shop's locale. */
(function () {
  "use strict";

  var block = document.getElementById("dashboard-data");
  if (!block || typeof window.Chart === "undefined") {
    return;
  }
  var Chart = window.Chart;
  var data = JSON.parse(block.textContent);
  var money = new Intl.NumberFormat(data.locale, {
    style: "currency", currency: data.currency, maximumFractionDigits: 0
  });
  var moneyExact = new Intl.NumberFormat(data.locale, { style: "currency", currency: data.currency });
  var number = new Intl.NumberFormat(data.locale);

  var REVENUE = "#1f5c4f";
  var CONVERSATIONS = "#3b6fb6";

  Chart.defaults.font.family = window.getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 13;
  Chart.defaults.color = "#46504b";
  // Figures to read, not a show: drawn at once (and finished when a test looks at them).
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;

  function axes(left, right, every) {
    return {
      // Days may skip labels; every adviser's name is shown (wrapped onto two lines if need be).
      x: { grid: { display: false }, ticks: { maxRotation: every ? 30 : 0, autoSkip: !every, autoSkipPadding: 12 } },
      conversations: {
        type: "linear", position: left, beginAtZero: true,
        title: { display: true, text: data.texts.conversations, color: CONVERSATIONS },
        ticks: { precision: 0, color: CONVERSATIONS, callback: function (v) { return number.format(v); } }
      },
      revenue: {
        type: "linear", position: right, beginAtZero: true,
        grid: { drawOnChartArea: false },
        title: { display: true, text: data.texts.revenue, color: REVENUE },
        ticks: { precision: 0, color: REVENUE, callback: function (v) { return money.format(v); } }
      }
    };
  }

  var tooltip = {
    callbacks: {
      label: function (item) {
        var value = item.dataset.yAxisID === "revenue"
          ? moneyExact.format(item.parsed.y) : number.format(item.parsed.y);
        return item.dataset.label + ": " + value;
      }
    }
  };

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (canvas) {
      new Chart(canvas, config);
      canvas.dataset.drawn = "true";
    }
  }

  draw("chart-days", {
    type: "line",
    data: {
      labels: data.days.labels,
      datasets: [
        {
          label: data.texts.revenue, data: data.days.revenue, yAxisID: "revenue",
          borderColor: REVENUE, backgroundColor: "rgba(31, 92, 79, 0.12)", fill: true,
          borderWidth: 2.5, pointRadius: data.days.labels.length > 45 ? 0 : 2.5, tension: 0.25
        },
        {
          label: data.texts.conversations, data: data.days.conversations, yAxisID: "conversations",
          borderColor: CONVERSATIONS, backgroundColor: CONVERSATIONS,
          borderWidth: 2, borderDash: [6, 4],
          pointRadius: data.days.labels.length > 45 ? 0 : 2.5, tension: 0.25
        }
      ]
    },
    options: {
      interaction: { mode: "index", intersect: false },
      scales: axes("left", "right", false),
      plugins: {
        legend: { position: "bottom", labels: { usePointStyle: true, pointStyle: "line" } },
        tooltip: tooltip
      }
    }
  });

  draw("chart-advisers", {
    type: "bar",
    data: {
      labels: data.advisers.labels,
      datasets: [
        {
          label: data.texts.conversations, data: data.advisers.conversations,
          yAxisID: "conversations", backgroundColor: CONVERSATIONS, borderRadius: 4
        },
        {
          label: data.texts.revenue, data: data.advisers.revenue,
          yAxisID: "revenue", backgroundColor: REVENUE, borderRadius: 4
        }
      ]
    },
    options: {
      interaction: { mode: "index", intersect: false },
      scales: axes("left", "right", true),
      plugins: { legend: { position: "bottom" }, tooltip: tooltip }
    }
  });

  document.documentElement.dataset.charts = "drawn";
})();
