/* Small SVG line charts for the dashboard (no library): a time window, auto-scaled y axis. */
"use strict";

window.EdgeCharts = (function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function fmt(v) {
    if (v === 0) return "0";
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(0);
    if (v >= 1) return v.toFixed(1);
    return v.toPrecision(2);
  }

  class LineChart {
    /* series: [{key: "p50", label: "p50"}, ...]; spanS: visible window in seconds */
    constructor(host, series, spanS) {
      this.host = host;
      this.series = series;
      this.span = spanS || 300;
    }

    draw(points, now) {
      const W = Math.max(200, this.host.clientWidth || 300);
      const H = Math.max(80, this.host.clientHeight || 140);
      const left = 34, right = 6, top = 16, bottom = 16;
      // The window grows with the data (30 s .. span) so a fresh dashboard is not a flat line.
      const first = points.length ? points[0].t : now;
      const span = Math.max(30, Math.min(this.span, now - first));
      const t0 = now - span;
      const visible = points.filter((p) => p.t >= t0);
      let max = 0;
      for (const p of visible) for (const s of this.series) {
        const v = p[s.key];
        if (typeof v === "number" && v > max) max = v;
      }
      const ymax = niceMax(max);
      const x = (t) => left + ((t - t0) / span) * (W - left - right);
      const y = (v) => top + (1 - v / ymax) * (H - top - bottom);
      const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
      for (const f of [0, 0.5, 1]) {
        const yy = y(ymax * f);
        svg.appendChild(el("line", { class: "grid-line", x1: left, x2: W - right, y1: yy, y2: yy }));
        svg.appendChild(el("text", { class: "axis", x: left - 4, y: yy + 3, "text-anchor": "end" }, fmt(ymax * f)));
      }
      const ago = span >= 90 ? `-${Math.round(span / 60)} min` : `-${Math.round(span)} s`;
      svg.appendChild(el("text", { class: "axis", x: left, y: H - 2 }, ago));
      svg.appendChild(el("text", { class: "axis", x: W - right, y: H - 2, "text-anchor": "end" }, "now"));
      this.series.forEach((s, i) => {
        let run = [];
        const flush = () => {
          if (run.length > 1) svg.appendChild(el("polyline", { class: `s${i}`, points: run.join(" ") }));
          run = [];
        };
        for (const p of visible) {
          const v = p[s.key];
          if (typeof v === "number") run.push(`${x(p.t).toFixed(1)},${y(v).toFixed(1)}`);
          else flush();
        }
        flush();
        const lx = W - right - (this.series.length - i) * 64;
        svg.appendChild(el("rect", { class: `legend k${i}`, x: lx, y: 2, width: 10, height: 4, rx: 2 }));
        svg.appendChild(el("text", { class: "axis", x: lx + 14, y: 8 }, s.label));
      });
      this.host.replaceChildren(svg);
    }
  }

  return { LineChart };
})();
