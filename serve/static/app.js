// The ds-synth agent page: upload files, ask, watch the agent's actions stream in, download what it made.
// Plain browser JavaScript talking to the same OpenAI-compatible API any client uses.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { threadId: null, pendingFiles: [], busy: false };
const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("ds-synth-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("ds-synth-api-key", keyInput.value.trim()));

function headers(extra = {}) {
  const key = keyInput.value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function apiError(resp) {
  try {
    const body = await resp.json();
    return `${resp.status}: ${body.error ? body.error.message : JSON.stringify(body)}`;
  } catch (_) {
    return `${resp.status}: ${resp.statusText}`;
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.className = isError ? "error" : "muted";
}

// File contents go through fetch (not a bare URL) so an API key can be sent with them.
const blobUrls = new Map();
async function fileBlobUrl(id) {
  if (!blobUrls.has(id)) {
    const resp = await fetch(`/v1/files/${encodeURIComponent(id)}/content`, { headers: headers() });
    if (!resp.ok) throw new Error(await apiError(resp));
    blobUrls.set(id, URL.createObjectURL(await resp.blob()));
  }
  return blobUrls.get(id);
}

const IMAGE = /\.(png|jpe?g|gif|svg|webp)$/i;

async function addDownload(file, label) {
  const link = el("a", { download: file.filename, href: "#", "data-file-id": file.id }, label || file.filename);
  link.addEventListener("click", async (event) => {
    if (link.dataset.ready) return;
    event.preventDefault();
    link.href = await fileBlobUrl(file.id);
    link.dataset.ready = "1";
    link.click();
  });
  const existing = [...$("#downloads").children].find((li) => li.dataset.name === (label || file.filename));
  const item = el("li", {}, link, el("span", { class: "muted" }, ` ${formatSize(file.bytes)}`));
  item.dataset.name = label || file.filename;
  if (existing) existing.replaceWith(item); else $("#downloads").append(item);
}

function formatSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// --- uploads ------------------------------------------------------------------------------------------------------

$("#file-input").addEventListener("change", async (event) => {
  for (const file of event.target.files) {
    const form = new FormData();
    form.append("purpose", "assistants");
    form.append("file", file, file.name);
    setStatus(`uploading ${file.name}…`);
    const resp = await fetch("/v1/files", { method: "POST", body: form, headers: headers() });
    if (!resp.ok) { setStatus(`upload of ${file.name} failed — ${await apiError(resp)}`, true); continue; }
    const obj = await resp.json();
    state.pendingFiles.push(obj);
    $("#files").append(el("li", { "data-file-id": obj.id }, `${obj.filename} `,
      el("span", { class: "muted" }, `${formatSize(obj.bytes)} — sent with the next question`)));
    setStatus(`uploaded ${obj.filename}`);
  }
  event.target.value = "";
});

$("#new-thread").addEventListener("click", () => {
  state.threadId = null;
  $("#thread").textContent = "new conversation";
  $("#log").replaceChildren();
  $("#downloads").replaceChildren();
});

// --- asking and streaming -----------------------------------------------------------------------------------------

$("#ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("#question").value.trim();
  if (!question || state.busy) return;
  state.busy = true;
  $("#ask").disabled = true;
  $("#log").append(el("div", { class: "question" }, question));
  const body = { model: "agent", stream: true, messages: [{ role: "user", content: question }],
    file_ids: state.pendingFiles.map((f) => f.id) };
  if (state.threadId) body.thread_id = state.threadId;
  setStatus("the agent is working…");
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", body: JSON.stringify(body), headers: headers({ "Content-Type": "application/json" }),
    });
    if (!resp.ok) throw new Error(await apiError(resp));
    state.pendingFiles = [];
    for (const li of $("#files").children) li.querySelector(".muted").textContent = "in the workspace";
    $("#question").value = "";
    await readStream(resp);
  } catch (err) {
    setStatus(String(err.message || err), true);
  } finally {
    state.busy = false;
    $("#ask").disabled = false;
  }
});

async function readStream(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        await handleChunk(JSON.parse(data));
      }
    }
  }
}

async function handleChunk(chunk) {
  if (chunk.error) { setStatus(chunk.error.message, true); return; }
  if (chunk.thread_id && chunk.thread_id !== state.threadId) {
    state.threadId = chunk.thread_id;
    $("#thread").textContent = chunk.thread_id;
  }
  const action = chunk.action;
  const choice = (chunk.choices || [])[0] || {};
  if (action) await showAction(action.kind, chunk, choice.delta ? choice.delta.content : "");
  if (choice.finish_reason) await finish(chunk, choice.finish_reason);
}

const TAG = /^\s*<(\w+)>\n?([\s\S]*?)\n?<\/\1>\s*$/;

async function showAction(kind, chunk, content) {
  if (kind === "stop") return;
  const match = TAG.exec(content || "");
  const body = match ? match[2] : (kind === "note" ? chunk.note : content || "");
  const box = el("div", { class: `action action-${kind}` }, el("div", { class: "tag" }, kind));
  if (kind === "Code") {
    box.append(el("pre", {}, el("code", {}, body.replace(/^```\w*\n?|```\s*$/g, ""))));
  } else if (kind === "Execute") {
    if (chunk.execution && !chunk.execution.ok) box.classList.add("failed");
    box.append(el("pre", {}, body));
    for (const file of chunk.files || []) {
      await addDownload(file);
      if (IMAGE.test(file.filename)) {
        const img = el("img", { alt: file.filename, "data-file-id": file.id });
        box.append(el("div", { class: "figure" }, img));
        img.src = await fileBlobUrl(file.id);
      }
    }
  } else if (kind === "Answer") {
    box.classList.add("answer");
    box.append(el("div", {}, renderMarkdown(body)));
  } else {
    box.append(el("pre", {}, body));
  }
  $("#log").append(box);
  box.scrollIntoView({ block: "end" });
}

async function finish(chunk, reason) {
  for (const file of chunk.files || []) await addDownload(file);
  if (chunk.report_file) await addDownload(chunk.report_file, "report.md");
  const summary = chunk.trajectory || {};
  const how = reason === "stop" ? "answered" : `stopped (${summary.stop_reason || reason})`;
  setStatus(`${how} in ${summary.rounds ?? "?"} rounds, ${(summary.duration_s ?? 0).toFixed(1)} s`);
  $("#log").append(el("div", { class: "done muted" }, how));
}

// --- a small markdown renderer for answers (escapes everything first; no HTML from the model gets through) -------

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function inline(text) {
  return escapeHtml(text)
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*]+)\*/g, "$1<em>$2</em>");
}

function renderMarkdown(text) {
  const out = [];
  const lines = text.replace(/\r/g, "").split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code = [];
      while (++i < lines.length && !lines[i].startsWith("```")) code.push(lines[i]);
      out.push(`<pre><code>${escapeHtml(code.join("\n"))}</code></pre>`);
    } else if (/^#{1,6}\s/.test(line)) {
      const level = line.match(/^#+/)[0].length;
      out.push(`<h${level}>${inline(line.slice(level).trim())}</h${level}>`);
    } else if (/^\s*\|.*\|\s*$/.test(line)) {
      const rows = [];
      for (; i < lines.length && /^\s*\|.*\|\s*$/.test(lines[i]); i++) rows.push(lines[i]);
      i--;
      const cells = (row) => row.trim().slice(1, -1).split("|").map((c) => c.trim());
      const body = rows.filter((r) => !/^\s*\|[\s:|-]+\|\s*$/.test(r));
      out.push("<table>" + body.map((r, n) => "<tr>" + cells(r).map((c) =>
        n === 0 ? `<th>${inline(c)}</th>` : `<td>${inline(c)}</td>`).join("") + "</tr>").join("") + "</table>");
    } else if (/^\s*([-*]|\d+\.)\s/.test(line)) {
      const ordered = /^\s*\d+\./.test(line);
      const items = [];
      for (; i < lines.length && /^\s*([-*]|\d+\.)\s/.test(lines[i]); i++) {
        items.push(`<li>${inline(lines[i].replace(/^\s*([-*]|\d+\.)\s/, ""))}</li>`);
      }
      i--;
      out.push(`<${ordered ? "ol" : "ul"}>${items.join("")}</${ordered ? "ol" : "ul"}>`);
    } else if (line.trim()) {
      out.push(`<p>${inline(line)}</p>`);
    }
  }
  const holder = document.createElement("div");
  holder.innerHTML = out.join("\n");
  return holder;
}

fetch("/health").then((r) => r.json()).then((h) => { $("#model").textContent = `model: ${h.model}`; }).catch(() => {});
