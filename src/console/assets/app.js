// moodstream console: renders the /events stream (Server-Sent Events; nothing is polled) and
// posts agent actions to /api/feedback. Customer text only ever goes into textContent.
"use strict";

const LABELS = ["anger", "frustration", "disappointment", "anxiety", "confusion", "gratitude", "satisfaction", "neutral"];
const NEGATIVE = new Set(["anger", "frustration", "disappointment", "anxiety"]);
const POSITIVE = new Set(["gratitude", "satisfaction"]);
const conversations = new Map();
const series = new Map();
const edits = new Map(); // draft_id → text the agent typed
let selected = null;
let lastSent = "";

function el(tag, attrs, ...children) {
  const e = tag === "svg" || attrs?.svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "svg" || v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}
const svgEl = (tag, attrs) => el(tag, { ...attrs, svg: true });

function chipClass(label) {
  if (NEGATIVE.has(label)) return "negative";
  if (POSITIVE.has(label)) return "positive";
  if (label === "confusion") return "confusion";
  return "neutral";
}

function chips(m) {
  const out = m.labels.map((l) => el("span", {
    class: `chip ${chipClass(l)}`, "data-label": l,
    text: l === m.primary_emotion && m.confidence != null ? `${l} ${Math.round(m.confidence * 100)}%` : l,
  }));
  if (m.corrected_label) out.push(el("span", { class: `chip corrected ${chipClass(m.corrected_label)}`, text: `agent: ${m.corrected_label}` }));
  return out;
}

function sparkline(values, w = 90, h = 22) {
  const svg = svgEl("svg", { class: "trend", width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  if (values.length === 0) return svg;
  const step = values.length > 1 ? w / (values.length - 1) : 0;
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - v * (h - 4)).toFixed(1)}`).join(" ");
  const last = values[values.length - 1];
  svg.append(svgEl("polyline", { points: pts, fill: "none", stroke: last >= 0.5 ? "#d64545" : "#8a94a6", "stroke-width": 2 }));
  return svg;
}

function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text;
  box.hidden = !text;
}

function queueOrder() {
  return [...conversations.values()]
    .filter((c) => !c.handled && c.messages.length > 0)
    .sort((a, b) => b.urgency - a.urgency || b.last_activity - a.last_activity);
}

function renderQueue() {
  const list = document.getElementById("queue");
  const open = queueOrder();
  document.getElementById("queue-count").textContent = `(${open.length})`;
  list.replaceChildren(...open.slice(0, 200).map((c) => {
    const latest = c.messages[c.messages.length - 1];
    return el("li", {
      class: [c.escalation, c.key === selected ? "selected" : ""].join(" "),
      "data-conversation": c.conversation_id, onclick: () => { selected = c.key; render(); },
    },
    el("div", { class: "cid", text: c.conversation_id }),
    el("div", { class: "meta" },
      c.escalation ? el("span", { class: `badge ${c.escalation}`, text: c.escalation }) : null,
      el("span", { text: `${c.tenant || "-"} · ${c.channel}` }),
      sparkline(c.messages.filter((m) => m.negativity != null).map((m) => m.negativity)),
      latest?.primary_emotion ? el("span", { class: `chip ${chipClass(latest.primary_emotion)}`, text: latest.primary_emotion }) : null));
  }));
}

const retryIds = new Map(); // "<message>/<action>" → event id of a send that failed: a retry reuses it

async function sendFeedback(body) {
  const retryKey = `${body.message_id}/${body.action}`;
  const id = retryIds.get(retryKey) || (crypto.randomUUID ? crypto.randomUUID() : fallbackUuid());
  retryIds.set(retryKey, id);
  let res;
  try {
    res = await fetch("/api/feedback", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ event_id: id, ...body }),
    });
  } catch (e) {
    showError(`Feedback not sent (network error: ${e.message}). Try again.`);
    return false;
  }
  if (!res.ok) {
    let detail = "";
    try { detail = (await res.json()).error; } catch (_) { detail = res.statusText; }
    showError(`Feedback not sent: HTTP ${res.status} ${detail}`);
    return false;
  }
  retryIds.delete(retryKey);
  showError("");
  lastSent = `${body.action} sent (${id.slice(0, 8)})`;
  const note = document.getElementById("sent");
  if (note) note.textContent = lastSent;
  return true;
}

function fallbackUuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function draftPanel(c, m) {
  const d = m.draft;
  const area = el("textarea", { "aria-label": "draft reply", "data-draft": d.draft_id });
  area.value = edits.has(d.draft_id) ? edits.get(d.draft_id) : d.text;
  area.addEventListener("input", () => edits.set(d.draft_id, area.value));
  const act = (action) => async (ev) => {
    ev.target.disabled = true;
    const body = { message_id: m.message_id, action };
    if (action === "edit_send") body.edited_text = area.value;
    if (await sendFeedback(body)) edits.delete(d.draft_id);
    ev.target.disabled = false;
  };
  return el("div", { class: "draft" },
    el("div", { class: "tags" },
      el("span", { text: `strategy: ${d.strategy}` }),
      el("span", { text: `intent: ${d.intent}` }),
      d.requires_review ? el("span", { class: "review", text: "needs review" }) : el("span", { text: "auto-send ok" }),
      el("span", { text: d.template_id })),
    d.subject ? el("div", { class: "subject", text: d.subject }) : null,
    area,
    el("div", { class: "buttons" },
      el("button", { class: "primary", "data-action": "accept", onclick: act("accept"), text: "Accept" }),
      el("button", { "data-action": "edit_send", onclick: act("edit_send"), text: "Edit & send" }),
      el("button", { class: "danger", "data-action": "reject", onclick: act("reject"), text: "Reject" }),
      el("span", { id: "sent", class: "actions-done", text: lastSent })));
}

function relabelControl(m) {
  const select = el("select", { class: "relabel-select", "aria-label": "correct label" },
    el("option", { value: "", text: "label is wrong → pick the right one" }),
    LABELS.filter((l) => l !== m.primary_emotion).map((l) => el("option", { value: l, text: l })));
  return el("div", { class: "relabel" }, select,
    el("button", {
      "data-action": "relabel", text: "Correct label",
      onclick: async () => { if (select.value) await sendFeedback({ message_id: m.message_id, action: "relabel", corrected_label: select.value }); },
    }));
}

function renderConversation() {
  const pane = document.getElementById("conversation");
  const c = conversations.get(selected);
  if (!c) { pane.replaceChildren(el("p", { class: "empty", text: "Pick a conversation from the queue." })); return; }
  const active = document.activeElement;
  if (active && active.tagName === "TEXTAREA" && pane.contains(active)) return; // don't disturb typing
  const latest = c.messages[c.messages.length - 1];
  pane.replaceChildren(
    el("h2", { text: `${c.conversation_id} · ${c.tenant || "-"} · ${c.channel}` },
      c.escalation ? el("span", { class: `badge ${c.escalation}`, text: ` ${c.escalation} ` }) : null),
    el("div", { class: "meta" }, el("span", { text: "negativity trend " }),
      sparkline(c.messages.filter((m) => m.negativity != null).map((m) => m.negativity), 200, 30)),
    ...c.messages.map((m) => el("div", { class: "msg", "data-message": m.message_id },
      el("div", { class: "when", text: m.sent_at ? new Date(m.sent_at).toLocaleString() : "" }),
      m.subject ? el("div", { class: "subject", text: m.subject }) : null,
      el("div", { class: "text", text: m.text ?? "(text not available)" }),
      el("div", {}, chips(m)),
      m.actions.length ? el("div", { class: "actions-done", text: m.actions.join(", ") }) : null)),
    latest?.draft ? draftPanel(c, latest) : el("p", { class: "empty", text: "No draft for the latest message yet." }),
    latest?.primary_emotion ? relabelControl(latest) : null);
}

function chart(s) {
  const w = 320, h = 90, pad = 4;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", "data-series": s.key });
  if (s.buckets.length === 0) return svg;
  const t0 = s.buckets[0][0], t1 = Math.max(s.buckets[s.buckets.length - 1][0] + s.bucket_ms, t0 + s.bucket_ms);
  const x = (t) => pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
  const y = (v) => h - pad - v * (h - 2 * pad);
  svg.append(svgEl("line", { x1: 0, x2: w, y1: y(0.5), y2: y(0.5), stroke: "#dde1e6", "stroke-dasharray": "3 3" }));
  const pts = s.buckets.map(([t, n, neg]) => `${x(t + s.bucket_ms / 2).toFixed(1)},${y(n ? neg / n : 0).toFixed(1)}`);
  svg.append(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: "#2563eb", "stroke-width": 2 }));
  for (const [t, sev] of s.surges) {
    if (t < t0 || t > t1) continue;
    const color = sev === "critical" ? "#d64545" : "#e08a1e";
    const m = svgEl("g", { class: "surge-marker", "data-severity": sev });
    m.append(svgEl("line", { x1: x(t), x2: x(t), y1: 0, y2: h, stroke: color, "stroke-width": 2 }),
      svgEl("polygon", { points: `${x(t) - 5},0 ${x(t) + 5},0 ${x(t)},8`, fill: color }));
    svg.append(m);
  }
  return svg;
}

function renderCharts() {
  const box = document.getElementById("charts");
  const all = [...series.values()].sort((a, b) => b.surges.length - a.surges.length || a.key.localeCompare(b.key));
  box.replaceChildren(...all.map((s) => {
    const total = s.buckets.reduce((a, b) => a + b[1], 0), neg = s.buckets.reduce((a, b) => a + b[2], 0);
    return el("div", { class: "chart" },
      el("div", { class: "title", text: `${s.tenant || "-"} · ${s.channel} — ${total ? Math.round((100 * neg) / total) : 0}% negative of ${total}` },
        s.surges.length ? el("span", { class: "badge critical", text: ` surge ×${s.surges.length} ` }) : null),
      chart(s));
  }));
}

function render() { renderQueue(); renderConversation(); renderCharts(); }

let pending = false;
function scheduleRender() { // many updates per second during a burst: draw once per frame
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

function connect() {
  const status = document.getElementById("status");
  const source = new EventSource("/events");
  source.onopen = () => { status.textContent = "live"; status.className = "status live"; };
  source.onerror = () => { status.textContent = "reconnecting…"; status.className = "status"; };
  source.addEventListener("snapshot", (e) => {
    const snap = JSON.parse(e.data);
    conversations.clear(); series.clear();
    for (const c of snap.conversations) conversations.set(c.key, c);
    for (const s of snap.series) series.set(s.key, s);
    if (!selected || !conversations.has(selected)) selected = queueOrder()[0]?.key ?? null;
    scheduleRender();
  });
  source.addEventListener("conversation", (e) => {
    const c = JSON.parse(e.data);
    conversations.set(c.key, c);
    if (!selected) selected = c.key;
    scheduleRender();
  });
  source.addEventListener("series", (e) => { const s = JSON.parse(e.data); series.set(s.key, s); scheduleRender(); });
}

fetch("/api/me", { credentials: "same-origin" }).then((r) => r.json()).then((me) => {
  document.getElementById("agent").textContent = `agent: ${me.agent_id}`;
  document.getElementById("logout").hidden = !me.signed_in;
}).catch(() => {});
connect();
