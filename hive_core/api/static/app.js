// The web page: a chat box streaming from the OpenAI-compatible API, and the live hive drawn
// from the server's /live WebSocket (districts at their map positions, pulses along links,
// verdicts and slashings as they happen). Plain script, no build step.
"use strict";

const view = {
  nodes: new Map(),   // id -> node as the server describes it
  links: [],          // [a, b, rtt ms]
  pulses: [],         // {from, to, start, dur}
  flashes: [],        // {node, kind: "verified" | "slashed", start}
  pulsesDrawn: 0,     // pulses drawn so far (tests read it)
  model: null,
  connected: false,
};
window.cadencia = view;

const $ = (id) => document.getElementById(id);
const short = (id) => id.slice(0, 6);
const PULSE_MIN_MS = 700;   // a loopback hop takes a millisecond: slowed so it can be seen
const FLASH_MS = 900;

// -- the live feed -----------------------------------------------------------------------

function connect(delay = 500) {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/live`);
  ws.onopen = () => { view.connected = true; $("dot").classList.add("on"); delay = 500; };
  ws.onmessage = (e) => receive(JSON.parse(e.data));
  ws.onclose = () => {
    view.connected = false;
    $("dot").classList.remove("on");
    setTimeout(() => connect(Math.min(delay * 2, 8000)), delay);
  };
}

function receive(msg) {
  if (msg.type === "hive") {
    view.nodes = new Map(msg.nodes.map((n) => [n.id, n]));
    view.links = msg.links;
    view.model = msg.model;
    $("model").textContent = `${msg.model} · ${msg.mode}` +
      (msg.status_error ? ` · status: ${msg.status_error}` : "");
    showStats(msg.answers);
    showNodes();
  } else if (msg.type === "events") {
    const now = performance.now();
    for (const e of msg.events) event(e, now);
  }
}

function event(e, now) {
  if (e.t === "hop" && view.nodes.has(e.from) && view.nodes.has(e.to)) {
    view.pulses.push({ from: e.from, to: e.to, start: now, dur: Math.max(PULSE_MIN_MS, e.ms * 50) });
    if (view.pulses.length > 400) view.pulses.splice(0, view.pulses.length - 400);
  } else if (e.t === "verified") {
    for (const n of e.nodes) view.flashes.push({ node: n, kind: "verified", start: now });
    tick(`verified by ${e.nodes.map(short).join(", ")}`);
  } else if (e.t === "slashed") {
    const n = view.nodes.get(e.node);
    if (n) n.state = "slashed";
    view.flashes.push({ node: e.node, kind: "slashed", start: now });
    tick(`slashed ${short(e.node)}: ${e.reason}`);
    showNodes();
  } else if (e.t === "left") {
    const n = view.nodes.get(e.node);
    if (n) n.state = "left";
    showNodes();
  } else if (e.t === "receipt") {
    const n = view.nodes.get(e.node);
    if (n) { n.tok_s = e.tok_s; showNodes(); }
  } else if (e.t === "stage") {
    tick(`${short(e.node)} runs layers ${e.layers[0]}-${e.layers[1]}`);
  } else if (e.t === "answer") {
    tick(`answered ${e.tokens} tokens at ${e.tok_s} tok/s` +
         (e.verified === true ? ", verified" : e.verified === false ? ", not verified" : ""));
  }
}

function tick(text) { $("ticker").textContent = text; }

function showStats(a) {
  $("stats").textContent = a && a.count ? `${a.count} answers · ${a.tokens} tokens · last ${a.last_tok_s} tok/s` : "";
}

function showNodes() {
  const rows = [...view.nodes.values()].sort((a, b) => (b.me - a.me) || a.id.localeCompare(b.id));
  const body = $("nodes").tBodies[0];
  body.replaceChildren(...rows.map((n) => {
    const tr = document.createElement("tr");
    const h = n.health || {};
    const health = h.tflops !== undefined
      ? `${h.tflops.toFixed(2)} TF${h.rtt_median_ms != null ? `, ${h.rtt_median_ms.toFixed(1)} ms` : ""}` : "";
    const cells = [n.me ? `${short(n.id)} (this server)` : short(n.id), n.role,
      n.layers.map((l) => `${l[0]}-${l[1]}`).join(" ") || "-", n.weights || "-",
      n.tok_s == null ? "-" : String(n.tok_s), n.state === "ok" ? health || "ok" : n.state];
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      if (n.state === "slashed") td.className = "slashed";
      else if (n.me) td.className = "me";
      tr.appendChild(td);
    }
    return tr;
  }));
}

// -- the map -----------------------------------------------------------------------------

const canvas = $("map");
const ctx = canvas.getContext("2d");

function place() {
  const pts = [...view.nodes.values()].map((n) => n.pos);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const minX = Math.min(...xs, -1), maxX = Math.max(...xs, 1);
  const minY = Math.min(...ys, -1), maxY = Math.max(...ys, 1);
  const w = canvas.width, h = canvas.height, pad = 42 * devicePixelRatio;
  const s = Math.min((w - 2 * pad) / (maxX - minX || 1), (h - 2 * pad) / (maxY - minY || 1));
  const cx = (minX + maxX) / 2, cy = (minY + maxY) / 2;
  const at = new Map();
  for (const n of view.nodes.values()) {
    at.set(n.id, [w / 2 + (n.pos[0] - cx) * s, h / 2 + (n.pos[1] - cy) * s]);
  }
  return at;
}

function colour(n) {
  if (n.state === "slashed") return "#f85149";
  if (n.state === "left") return "#484f58";
  if (n.me) return "#58a6ff";
  if (n.role === "sentinel") return "#a371f7";
  return n.layers.length ? "#f0b429" : "#8b949e";
}

function draw(now) {
  const dpr = devicePixelRatio || 1;
  const w = Math.round(canvas.clientWidth * dpr), h = Math.round(canvas.clientHeight * dpr);
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  ctx.clearRect(0, 0, w, h);
  const at = place();
  ctx.lineWidth = 1.5 * dpr;
  for (const [a, b, ms] of view.links) {
    const p = at.get(a), q = at.get(b);
    if (!p || !q) continue;
    ctx.strokeStyle = ms < 5 ? "#2f4f3a" : ms < 50 ? "#4d4a2a" : "#4f2f2f";
    ctx.beginPath(); ctx.moveTo(p[0], p[1]); ctx.lineTo(q[0], q[1]); ctx.stroke();
  }
  view.pulses = view.pulses.filter((u) => now - u.start < u.dur);
  for (const u of view.pulses) {
    const p = at.get(u.from), q = at.get(u.to);
    if (!p || !q) continue;
    const f = (now - u.start) / u.dur;
    ctx.strokeStyle = "rgba(240,180,41,.35)";
    ctx.beginPath(); ctx.moveTo(p[0], p[1]); ctx.lineTo(q[0], q[1]); ctx.stroke();
    ctx.fillStyle = "#ffd866";
    ctx.shadowColor = "#ffd866";
    ctx.shadowBlur = 12 * dpr;
    ctx.beginPath();
    ctx.arc(p[0] + (q[0] - p[0]) * f, p[1] + (q[1] - p[1]) * f, 6 * dpr, 0, 2 * Math.PI);
    ctx.fill();
    ctx.shadowBlur = 0;
    view.pulsesDrawn += 1;
  }
  view.flashes = view.flashes.filter((f) => now - f.start < FLASH_MS);
  for (const n of view.nodes.values()) {
    const p = at.get(n.id);
    const r = (10 + 3 * Math.min(n.layers.reduce((s, l) => s + l[1] - l[0], 0), 30) / 3) * dpr;
    ctx.fillStyle = colour(n);
    ctx.beginPath(); ctx.arc(p[0], p[1], r, 0, 2 * Math.PI); ctx.fill();
    for (const f of view.flashes) {
      if (f.node !== n.id) continue;
      ctx.strokeStyle = f.kind === "verified" ? "#3fb950" : "#f85149";
      ctx.lineWidth = 3 * dpr;
      ctx.beginPath(); ctx.arc(p[0], p[1], r + (6 + 10 * (now - f.start) / FLASH_MS) * dpr, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.lineWidth = 1.5 * dpr;
    }
    ctx.fillStyle = "#e6edf3";
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    const layers = n.layers.map((l) => `${l[0]}-${l[1]}`).join(" ");
    ctx.fillText(n.me ? "you" : short(n.id), p[0], p[1] - r - 4 * dpr);
    if (layers) ctx.fillText(`layers ${layers}`, p[0], p[1] + r + 12 * dpr);
  }
  requestAnimationFrame(draw);
}

// -- the chat ----------------------------------------------------------------------------

const history = [];

function bubble(kind, text) {
  const div = document.createElement("div");
  div.className = `msg ${kind}`;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

async function modelId() {
  const r = await fetch("/v1/models");
  const doc = await r.json();
  return doc.data[0].id;
}

async function ask(prompt) {
  history.push({ role: "user", content: prompt });
  bubble("user", prompt);
  const out = bubble("assistant", "");
  const text = document.createTextNode("");
  out.appendChild(text);
  const r = await fetch("/v1/chat/completions", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: await modelId(), messages: history, stream: true,
                           temperature: 0 }),
  });
  if (!r.ok) {
    const doc = await r.json().catch(() => ({ error: { message: r.statusText } }));
    out.className = "msg error";
    text.data = `${r.status}: ${doc.error.message}`;
    history.pop();
    return;
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", answer = "", ext = null, failed = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") continue;
      const doc = JSON.parse(data);
      if (doc.error) { failed = doc.error.message; continue; }
      const piece = doc.choices.length ? doc.choices[0].delta.content : null;
      if (piece) { answer += piece; text.data = answer; $("log").scrollTop = $("log").scrollHeight; }
      if (doc.cadencia) ext = doc.cadencia;
    }
  }
  if (failed) { out.className = "msg error"; text.data = answer + `\n${failed}`; history.pop(); return; }
  history.push({ role: "assistant", content: answer });
  if (ext) {
    const info = document.createElement("span");
    info.className = "info";
    const stages = (ext.route || []).map((s) => `${s.layers[0]}-${s.layers[1]}`).join(" → ");
    info.textContent = `${ext.tokens_per_s} tok/s` + (stages ? ` · route ${stages}` : " · this device") +
      (ext.verified === true ? " · verified" : ext.verified === false ? " · not verified" : "") +
      (ext.slashed && ext.slashed.length ? ` · slashed ${ext.slashed.map(short).join(", ")}` : "");
    out.appendChild(info);
  }
}

$("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  $("prompt").value = "";
  $("send").disabled = true;
  try { await ask(prompt); } catch (err) { bubble("error", String(err)); }
  finally { $("send").disabled = false; $("prompt").focus(); }
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});

connect();
requestAnimationFrame(draw);
