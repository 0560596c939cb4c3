// The ops dashboard: reads /api/overview every two seconds and draws it; countdowns tick
// every second against the broker's clock. Everything is built with textContent (a roster
// name is data, never markup).
"use strict";
(function () {
  const POLL_MS = 2000;
  const PALETTE = ["#c62828", "#0b5cad", "#b35900", "#6a1b9a", "#00838f", "#558b2f", "#ad1457", "#4e342e"];
  let last = null;          // the newest overview
  let fetchedAt = 0;        // performance.now() when it arrived
  let seen = null;          // node -> online, to note changes as events

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  const nowMs = () => last.now_ms + (performance.now() - fetchedAt);
  const clock = (ms) => new Date(ms).toISOString().slice(11, 19) + "Z";
  const stamp = (ms) => new Date(ms).toISOString().slice(0, 16).replace("T", " ") + "Z";

  function duration(ms) {
    const neg = ms < 0;
    let s = Math.floor(Math.abs(ms) / 1000);
    const d = Math.floor(s / 86400); s %= 86400;
    const h = Math.floor(s / 3600); s %= 3600;
    const m = Math.floor(s / 60); s %= 60;
    const hms = [h, m, s].map((n) => String(n).padStart(2, "0")).join(":");
    return (neg ? "−" : "") + (d ? d + "d " : "") + hms;
  }
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }
  function facts(dl, rows) {
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }
  function note(text) {
    const list = $("events");
    list.prepend(el("li", {}, clock(nowMs()) + " " + text));
    while (list.children.length > 50) list.lastChild.remove();
  }

  function drawHeader(o) {
    const b = o.broker;
    const ready = $("ready");
    ready.textContent = b.not_ready ? "not ready: " + b.not_ready : "ready";
    ready.className = "pill " + (b.not_ready ? "bad" : "ok");
    let f = "v" + b.version + " · roster v" + b.roster_version;
    if (b.replica) {
      const r = b.replica;
      f += " · replica " + r.id + (r.leader === r.id ? " (leader)" : r.leader ? " (leader " + r.leader + ")" : " (no leader)") + " · term " + r.term;
    }
    $("facts").textContent = f;
    $("logout").hidden = !b.locked;
  }

  function drawPartners(o) {
    const rows = o.partners.map((p) => {
      const state = p.revoked ? "revoked" : p.connections > 0 ? "online" : "offline";
      const lag = el("td", { class: "num" + (p.owed > 100 ? " lagging" : "") }, p.lanes ? p.owed : "–");
      return el("tr", { class: state, "data-node": p.node },
        el("td", {}, el("span", { class: "dot" }), p.node),
        el("td", { class: "hide-narrow" }, p.role),
        el("td", { class: "state" }, state),
        el("td", { class: "num" }, p.connections),
        el("td", { class: "num" }, p.lanes),
        lag);
    });
    $("partners").tBodies[0].replaceChildren(...rows);
    const online = o.partners.filter((p) => p.connections > 0).length;
    $("online").textContent = online + " of " + o.partners.length + " online";
    const now = new Map(o.partners.map((p) => [p.node, p.connections > 0]));
    if (seen) {
      for (const [node, on] of now) {
        if (on !== (seen.get(node) || false)) note(node + (on ? " connected" : " disconnected"));
      }
    }
    seen = now;
  }

  function drawCases(o) {
    const cases = o.cases || [];
    const total = o.cases_total == null ? cases.length : o.cases_total;
    $("case-count").textContent = !o.cases ? "(the broker was busy)"
      : total > cases.length ? total + " running, the first " + cases.length + " shown" : total + " running";
    $("no-cases").hidden = cases.length > 0;
    const rows = cases.map((c) => el("tr", { "data-case": c.id },
      el("td", { "data-label": "Case" }, c.case_type + " ", el("span", { class: "id", title: c.id }, c.id.slice(0, 8))),
      el("td", { "data-label": "Time left", class: "countdown", "data-due": c.due_ms == null ? "" : c.due_ms }, ""),
      el("td", { "data-label": "Next due" }, c.next_stage ? c.next_stage + " by " + stamp(c.due_ms) : "–"),
      el("td", { "data-label": "Waiting on", class: "wrap" }, c.waiting_on.length ? c.waiting_on.join(", ") + " (" + c.waiting_on.length + " of " + c.parties + ")" : "–"),
      el("td", { "data-label": "Opened by" }, c.opener + " · " + stamp(c.opened_ms)),
      el("td", { "data-label": "Status" }, c.status)));
    $("cases").tBodies[0].replaceChildren(...rows);
    tick();
  }

  function tick() {
    if (!last) return;
    const now = nowMs();
    for (const td of document.querySelectorAll("td.countdown")) {
      if (!td.dataset.due) { td.textContent = "–"; continue; }
      const left = Number(td.dataset.due) - now;
      td.textContent = left < 0 ? "overdue " + duration(-left) : duration(left);
      td.classList.toggle("overdue", left < 0);
      td.classList.toggle("soon", left >= 0 && left < 3600 * 1000);
    }
    const age = $("checkpoint-age");
    if (last.checkpoint && age) age.textContent = duration(now - last.checkpoint.time_ms) + " ago";
  }

  function drawRejections(o) {
    const t = o.traffic;
    const samples = t.history.concat([t.now]);
    const reasons = [...new Set(samples.flatMap((s) => Object.keys(s.rejected)))].sort();
    const color = (r) => PALETTE[reasons.indexOf(r) % PALETTE.length];
    const slots = 180, w = 360 / slots, svg = $("rejections");
    const bars = [];
    let max = 1;
    const deltas = [];
    for (let i = 1; i < samples.length; i++) {
      const d = reasons.map((r) => Math.max(0, (samples[i].rejected[r] || 0) - (samples[i - 1].rejected[r] || 0)));
      deltas.push(d);
      max = Math.max(max, d.reduce((a, b) => a + b, 0));
    }
    deltas.forEach((d, i) => {
      const x = (slots - deltas.length + i) * w;
      let y = 120;
      d.forEach((n, j) => {
        if (!n) return;
        const h = (n / max) * 110;
        y -= h;
        const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
        for (const [k, v] of [["x", x], ["y", y], ["width", Math.max(w - 0.5, 0.5)], ["height", h], ["fill", color(reasons[j])]]) rect.setAttribute(k, v);
        const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
        title.textContent = reasons[j] + ": " + n;
        rect.append(title);
        bars.push(rect);
      });
    });
    svg.replaceChildren(...bars);
    const total = reasons.reduce((a, r) => a + (t.now.rejected[r] || 0), 0);
    $("rejected-total").textContent = total + " since start";
    $("reasons").replaceChildren(...reasons.map((r) =>
      el("li", { "data-reason": r }, el("i", {}), r + " " + (t.now.rejected[r] || 0))));
    // colours through the DOM, not a style attribute (the page's policy allows no inline style)
    [...$("reasons").children].forEach((li) => { li.firstChild.style.background = color(li.dataset.reason); });
  }

  function drawTraffic(o) {
    const t = o.traffic, h = t.history;
    const first = h.length ? h[0] : t.now;
    const mins = Math.max((t.now.at_ms - first.at_ms) / 60000, 1 / 60);
    facts($("traffic"), [
      ["Published", t.now.accepted.toLocaleString("en")],
      ["Delivered", t.now.delivered.toLocaleString("en")],
      ["Publish rate", h.length ? ((t.now.accepted - first.accepted) / mins).toFixed(1) + " /min" : "–"],
      ["Log entries", o.broker.log_entries.toLocaleString("en")],
    ]);
  }

  function drawCheckpoint(o) {
    const c = o.checkpoint;
    if (!c) { facts($("checkpoint"), [["Newest", "none yet"]]); return; }
    facts($("checkpoint"), [
      ["Covers", c.entries.toLocaleString("en") + " of " + o.broker.audit_entries.toLocaleString("en") + " audit entries"],
      ["Signed", stamp(c.time_ms)],
      ["Age", el("span", { id: "checkpoint-age" }, "")],
      ["Witnesses", c.witnesses.length ? c.witnesses.join(", ") : "none yet"],
    ].concat(c.replicas ? [["Replica signatures", c.replicas]] : []));
  }

  function drawStorage(o) {
    const s = o.storage;
    if (!s) { facts($("storage"), [["Data", "measuring…"]]); return; }
    const used = s.total_bytes - s.free_bytes;
    facts($("storage"), [
      ["Data directory", bytes(s.data_bytes)],
      ["Disk free", bytes(s.free_bytes) + " of " + bytes(s.total_bytes)],
    ]);
    $("disk-bar").style.width = (s.total_bytes ? (100 * used) / s.total_bytes : 0).toFixed(1) + "%";
  }

  async function poll() {
    try {
      const res = await fetch("/api/overview", { credentials: "same-origin", cache: "no-store" });
      if (res.status === 401) { location.assign("/login"); return; }
      if (!res.ok) throw new Error("HTTP " + res.status);
      last = await res.json();
      fetchedAt = performance.now();
      drawHeader(last); drawPartners(last); drawCases(last); drawRejections(last);
      drawTraffic(last); drawCheckpoint(last); drawStorage(last); tick();
      $("updated").textContent = "updated " + clock(last.now_ms);
    } catch (e) {
      $("ready").textContent = "unreachable: " + e.message;
      $("ready").className = "pill bad";
    }
  }

  poll();
  setInterval(poll, POLL_MS);
  setInterval(tick, 1000);
})();
