/* edge-app dashboard: live cards over Server-Sent Events, a history view over the JSON API.
   All text goes through textContent: nothing from the network is parsed as HTML. */
"use strict";

(function () {
  const STRIP = 12;
  const MAX_DELAYS = 20000;
  const $ = (sel, root) => (root || document).querySelector(sel);

  const model = { cameras: new Map(), devices: new Map(), series: [], pipeline: null };
  // Publish-to-page delays (s) of results rendered, read by `edge-app bench dashboard`.
  const probe = { delays: [], results: 0, snapshots: 0 };
  window.edgeDash = probe;

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function timeOf(ts) {
    return ts ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : "–";
  }
  function dateTimeOf(ts) {
    const d = new Date(ts * 1000);
    return `${d.toLocaleDateString()} ${d.toLocaleTimeString([], { hour12: false })}`;
  }
  function pct(v) { return typeof v === "number" ? `${Math.round(v * 100)}%` : "–"; }
  function ms(v) {
    if (typeof v !== "number") return "–";
    if (v < 0.001) return `${Math.round(v * 1e6)} µs`;
    return v < 1 ? `${(v * 1000).toFixed(1)} ms` : `${v.toFixed(2)} s`;
  }
  function mb(v) {
    if (typeof v !== "number" || v <= 0) return "–";
    return v >= 2 ** 30 ? `${(v / 2 ** 30).toFixed(1)} GB` : `${Math.round(v / 2 ** 20)} MB`;
  }
  function hue(label) {
    let x = 0;
    for (const ch of String(label)) x = (x * 31 + ch.charCodeAt(0)) % 360;
    return `hsl(${x} 65% 50%)`;
  }
  function clear(node, placeholder) {
    node.replaceChildren();
    if (placeholder) node.append(h("p", { class: "empty muted", text: placeholder }));
  }

  // --- cameras ---------------------------------------------------------------------------------
  function cameraCard(sensor) {
    let card = document.querySelector(`.camera[data-sensor="${CSS.escape(sensor)}"]`);
    if (card) return card;
    const host = $("#cameras");
    host.querySelector(".empty")?.remove();
    card = h("article", { class: "card camera", "data-sensor": sensor },
      h("div", { class: "card-head" }, h("h3", { text: sensor }), h("span", { class: "badge when", text: "–" })),
      h("div", { class: "thumb thumb-empty", text: "no thumbnail yet" }),
      h("div", { class: "action", text: "–" }),
      h("div", { class: "confbar" }, h("span")),
      h("div", { class: "meta" }, h("span", { class: "conf", text: "" }), h("span", { class: "lat", text: "" })),
      h("div", { class: "strip", "aria-label": "recent actions" }));
    const cards = [...host.children].filter((c) => c.dataset.sensor && c.dataset.sensor > sensor);
    host.insertBefore(card, cards[0] || null);
    return card;
  }

  function renderCamera(cam) {
    const card = cameraCard(cam.sensor);
    const last = cam.last;
    if (cam.thumb_version) setThumb(card, cam.sensor, cam.thumb_version);
    if (!last) return;
    const ok = last.status === "ok";
    const shown = ok ? last : cam.last_ok || last;
    const action = $(".action", card);
    action.textContent = ok ? String(last.label ?? "?") : `dropped: ${last.reason || "error"}`;
    action.classList.toggle("dropped", !ok);
    $(".when", card).textContent = timeOf(last.ts);
    const score = ok ? last.score : null;
    $(".confbar > span", card).style.width = typeof score === "number" ? `${Math.max(0, Math.min(1, score)) * 100}%` : "0";
    $(".conf", card).textContent = typeof score === "number" ? `confidence ${pct(score)}` : (shown !== last ? `last: ${shown.label}` : "");
    $(".lat", card).textContent = `latency ${ms(last.latency)}`;
    const strip = $(".strip", card);
    strip.replaceChildren(...cam.recent.slice(-STRIP).reverse().map((r) => {
      const chip = h("span", {
        class: r.status === "ok" ? "chip" : "chip drop",
        title: `${timeOf(r.ts)} ${r.status === "ok" ? `${r.label} ${pct(r.score)}` : `dropped (${r.reason})`}`,
        text: r.status === "ok" ? String(r.label ?? "?") : (r.reason || "drop"),
      });
      if (r.status === "ok") chip.style.setProperty("--hue", hue(r.label));
      return chip;
    }));
  }

  function setThumb(card, sensor, version) {
    let img = $(".thumb", card);
    if (img.tagName !== "IMG") {
      const next = h("img", { class: "thumb", alt: `${sensor} thumbnail` });
      img.replaceWith(next);
      img = next;
    }
    img.src = `/api/thumb/${encodeURIComponent(sensor)}?v=${version}`;
  }

  function onResult(r) {
    let cam = model.cameras.get(r.sensor);
    if (!cam) {
      cam = { sensor: r.sensor, last: null, last_ok: null, recent: [], thumb_version: 0 };
      model.cameras.set(r.sensor, cam);
    }
    cam.last = r;
    if (r.status === "ok") cam.last_ok = r;
    cam.recent.push(r);
    if (cam.recent.length > STRIP * 2) cam.recent.splice(0, cam.recent.length - STRIP * 2);
    dirty.add(r.sensor);
    waiting.push(r.ts);
    if (!frameQueued) {
      frameQueued = true;
      requestAnimationFrame(drawDirty);
    }
  }

  // Results are drawn once per animation frame, however many arrived since the last one.
  const dirty = new Set();
  let waiting = [];
  let frameQueued = false;
  function drawDirty() {
    frameQueued = false;
    for (const sensor of dirty) {
      const cam = model.cameras.get(sensor);
      if (cam) renderCamera(cam);
    }
    dirty.clear();
    const now = Date.now() / 1000;
    for (const ts of waiting) probe.delays.push(now - ts);
    probe.results += waiting.length;
    waiting = [];
    if (probe.delays.length > MAX_DELAYS) probe.delays.splice(0, probe.delays.length - MAX_DELAYS);
  }

  // --- devices ---------------------------------------------------------------------------------
  const seatKey = (stage, shard) => `${stage}/${shard ?? ""}`;

  // One chip per seat of the plan, with the service time the device measured for it.
  function seatChips(seats, service) {
    if (!seats || !seats.length) return [document.createTextNode("none")];
    return seats.map((s) => {
      const measured = s.mode === "merger" ? undefined : service.get(seatKey(s.stage, s.mode === "shard" ? s.shard : null));
      const what = s.mode === "shard" ? `stage ${s.stage} shard ${s.shard} [${s.lo}, ${s.hi})`
        : s.mode === "replica" ? `stage ${s.stage} replica, weight ${Number(s.weight).toFixed(2)}`
          : `stage ${s.stage} merger`;
      return h("span", { class: `seat ${s.mode}`, text: measured === undefined ? what : `${what} · ${ms(measured)}` });
    });
  }

  function row(dl, label, ...value) {
    dl.append(h("dt", { text: label }), h("dd", {}, ...value));
  }
  function blockRow(dl, label, ...value) {  // label above, value across the card
    dl.append(h("dt", { class: "block", text: label }), h("dd", { class: "block" }, ...value));
  }

  function renderDevice(d) {
    const host = $("#devices");
    host.querySelector(".empty")?.remove();
    let card = document.querySelector(`.device[data-device="${CSS.escape(d.device)}"]`);
    if (!card) {
      card = h("article", { class: "card device", "data-device": d.device });
      const cards = [...host.children].filter((c) => c.dataset.device && c.dataset.device > d.device);
      host.insertBefore(card, cards[0] || null);
    }
    card.classList.toggle("offline", !d.online);
    card.classList.toggle("online", !!d.online);
    const dl = h("dl", { class: "rows" });
    const service = new Map((d.service || []).map((x) => [seatKey(x.stage, x.shard), x.service_time_s]));
    if (d.seats && d.seats.length) blockRow(dl, "stages", ...seatChips(d.seats, service));
    else row(dl, "stages", "none");
    const seated = new Set((d.seats || []).map((x) => seatKey(x.stage, x.mode === "shard" ? x.shard : null)));
    if (typeof d.load === "number") {
      const bar = h("div", { class: d.load > 0.85 ? "bar hot" : "bar" }, h("span"));
      bar.firstChild.style.width = `${Math.min(1, d.load) * 100}%`;
      row(dl, "load", pct(d.load));
      dl.append(bar);
    }
    if (d.queue !== null && d.queue !== undefined) row(dl, "queue", `${d.queue} / ${d.queue_limit || "∞"}`);
    for (const s of d.service || []) {  // measured for a stage the plan no longer gives it
      if (seated.has(seatKey(s.stage, s.shard))) continue;
      row(dl, `service s${s.stage}${s.shard !== null && s.shard !== undefined ? `.${s.shard}` : ""}`, ms(s.service_time_s));
    }
    if (d.memory_total) row(dl, "memory", `${mb(d.memory_available)} free of ${mb(d.memory_total)}`);
    if (typeof d.temperature_c === "number") row(dl, "temperature", `${d.temperature_c.toFixed(1)} °C`);
    row(dl, "hardware", d.emulated ? `emulated ${d.emulated}` : (d.cpu_model ? `real · ${d.cpu_model}` : "real"));
    if (d.sensor) row(dl, "camera", `${d.sensor.sent_fps.toFixed(1)} fps sent, ${d.sensor.skipped} skipped`);
    row(dl, "last seen", timeOf(d.last_seen));
    card.replaceChildren(
      h("div", { class: "card-head" },
        h("div", {}, h("h3", { text: d.device }), h("div", { class: "role", text: d.role })),
        h("span", { class: "pill", text: d.online ? "online" : "offline" })),
      dl);
  }

  // --- pipeline --------------------------------------------------------------------------------
  function renderPipeline(p) {
    if (p.plan !== undefined) model.pipeline = p.plan;
    const plan = model.pipeline;
    const body = $("#plan-table tbody");
    if (plan) {
      $("#plan-epoch").textContent = `epoch ${plan.epoch}`;
      $("#plan-meta").textContent = `${plan.model} · scheduler ${plan.scheduler}${plan.reason ? ` · ${plan.reason}` : ""}`;
      body.replaceChildren(...plan.stages.map((s) => {
        const seats = s.mode === "sharded"
          ? s.shards.map((x) => `${x.device} [${x.lo}, ${x.hi})`)
          : s.replicas.map((x) => `${x.device} ×${Number(x.weight).toFixed(2)}`);
        return h("tr", {}, h("td", { text: `stage ${s.index}` }), h("td", { text: s.mode }), h("td", { text: seats.join(", ") || "unseated" }));
      }));
    }
    if (p.counters) renderCounters(p.counters);
  }

  function renderCounters(c) {
    const items = [["completed", c.completed], ["accepted", c.accepted], ["re-sent", c.resent]];
    for (const [reason, n] of Object.entries(c.dropped || {})) items.push([`dropped: ${reason}`, n, true]);
    if (!Object.keys(c.dropped || {}).length) items.push(["dropped", 0]);
    items.push(["errors", c.errors, c.errors > 0]);
    $("#counters-since").textContent = c.since ? `outcomes counted since ${timeOf(c.since)}` : "";
    $("#counters").replaceChildren(...items.map(([label, n, warn]) =>
      h("div", { class: warn ? "counter warn" : "counter", "data-counter": label }, h("b", { text: String(n ?? 0) }), h("span", { text: label }))));
  }

  // --- charts ----------------------------------------------------------------------------------
  let charts = null;
  function renderCharts() {
    if (!window.EdgeCharts) return;
    if (!charts) {
      charts = {
        throughput: new window.EdgeCharts.LineChart($("#chart-throughput"), [{ key: "completed", label: "done/s" }, { key: "dropped", label: "dropped/s" }], 300),
        latency: new window.EdgeCharts.LineChart($("#chart-latency"), [{ key: "p50", label: "p50" }, { key: "p95", label: "p95" }], 300),
      };
    }
    const now = model.series.length ? model.series[model.series.length - 1].t : Date.now() / 1000;
    charts.throughput.draw(model.series, now);
    charts.latency.draw(model.series, now);
  }

  // --- live stream -----------------------------------------------------------------------------
  function onSnapshot(s) {
    probe.snapshots += 1;
    model.cameras = new Map(s.cameras.map((c) => [c.sensor, c]));
    model.devices = new Map(s.devices.map((d) => [d.device, d]));
    model.series = s.series || [];
    $("#fleet").textContent = s.dashboard ? s.dashboard.fleet : "";
    clear($("#cameras"), s.cameras.length ? null : "No camera has reported yet.");
    clear($("#devices"), s.devices.length ? null : "No device has reported yet.");
    for (const c of s.cameras) renderCamera(c);
    for (const d of s.devices) renderDevice(d);
    renderPipeline(s.pipeline);
    renderCharts();
  }

  const handlers = {
    snapshot: onSnapshot,
    result: onResult,
    thumb: (t) => {
      const cam = model.cameras.get(t.sensor) || { sensor: t.sensor, last: null, recent: [] };
      cam.thumb_version = t.version;
      model.cameras.set(t.sensor, cam);
      setThumb(cameraCard(t.sensor), t.sensor, t.version);
    },
    device: (d) => { model.devices.set(d.device, d); renderDevice(d); },
    device_removed: (d) => {
      model.devices.delete(d.device);
      document.querySelector(`.device[data-device="${CSS.escape(d.device)}"]`)?.remove();
    },
    plan: renderPipeline,
    counters: renderCounters,
    tick: (p) => {
      model.series.push(p);
      if (model.series.length > 600) model.series.splice(0, model.series.length - 600);
      renderCharts();
    },
  };

  function connect() {
    const link = $("#link");
    const source = new EventSource("/api/events");
    source.onopen = () => { link.textContent = "live"; link.classList.add("live"); };
    source.onerror = () => { link.textContent = "reconnecting"; link.classList.remove("live"); };
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (ev) => {
        try { fn(JSON.parse(ev.data)); } catch (err) { console.warn("dashboard: bad event", name, err); }
      });
    }
  }

  // --- history view ----------------------------------------------------------------------------
  function toInput(ts) {
    const d = new Date(ts * 1000 - new Date().getTimezoneOffset() * 60000);
    return d.toISOString().slice(0, 19);
  }
  function fromInput(v) { return v ? new Date(v).getTime() / 1000 : ""; }

  async function getJson(url) {
    const res = await fetch(url, { cache: "no-store" });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    return res.json();
  }

  async function loadCameras() {
    const { cameras } = await getJson("/api/cameras");
    const sel = $("#h-camera");
    const current = sel.value;
    sel.replaceChildren(h("option", { value: "", text: "all cameras" }), ...cameras.map((c) => h("option", { value: c, text: c })));
    sel.value = cameras.includes(current) ? current : "";
  }

  async function loadHistory() {
    const q = new URLSearchParams({ limit: "500" });
    if ($("#h-camera").value) q.set("camera", $("#h-camera").value);
    const since = fromInput($("#h-from").value), until = fromInput($("#h-to").value);
    if (since !== "") q.set("since", String(since));
    if (until !== "") q.set("until", String(until));
    const [{ results }, { events }] = await Promise.all([
      getJson(`/api/history?${q}`),
      getJson(`/api/device-events?${new URLSearchParams({ limit: "200", ...(since !== "" ? { since: String(since) } : {}), ...(until !== "" ? { until: String(until) } : {}) })}`),
    ]);
    $("#history-table tbody").replaceChildren(...(results.length ? results.map((r) => h("tr", { "data-job": r.job },
      h("td", { text: dateTimeOf(r.ts) }), h("td", { text: r.sensor }),
      h("td", { text: r.status === "ok" ? String(r.label ?? "?") : "–" }),
      h("td", { text: r.status === "ok" ? pct(r.score) : "–" }),
      h("td", { class: r.status === "ok" ? "" : "drop", text: r.status === "ok" ? "ok" : `dropped: ${r.reason}` }),
      h("td", { text: ms(r.latency) }))) : [h("tr", {}, h("td", { colspan: "6", class: "muted", text: "nothing in this range" }))]));
    $("#events-table tbody").replaceChildren(...events.map((e) => h("tr", {},
      h("td", { text: dateTimeOf(e.ts) }), h("td", { text: e.device }), h("td", { text: e.kind }), h("td", { text: e.detail }))));
  }

  function showView() {
    const history = location.hash === "#history";
    $("#view-live").hidden = history;
    $("#view-history").hidden = !history;
    $("#tab-live").classList.toggle("active", !history);
    $("#tab-history").classList.toggle("active", history);
    if (history) {
      if (!$("#h-from").value) $("#h-from").value = toInput(Date.now() / 1000 - 3600);
      loadCameras().then(loadHistory).catch((err) => console.warn("dashboard: history", err));
    } else {
      renderCharts();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#history-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      loadHistory().catch((err) => console.warn("dashboard: history", err));
    });
    window.addEventListener("hashchange", showView);
    window.addEventListener("resize", () => renderCharts());
    showView();
    connect();
  });
})();
