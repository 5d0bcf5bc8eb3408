// The playground page: streams text from the server's OpenAI endpoints and draws what /explain computes.
// Plain JavaScript, no libraries: every number drawn here comes from the server's JSON.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, key: "", explanation: null, position: null, controller: null, chat: [], tab: "write",
                explanations: { write: null, chat: null } };

function shown(text) {
  // Spaces, line breaks and tabs made visible, other control characters as \xNN, as in `lmsmith explain`.
  const visible = text.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
  // eslint-disable-next-line no-control-regex
  return visible.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0")) ||
    "\u2205";
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.key) h.Authorization = "Bearer " + state.key;
  return h;
}

async function failure(response) {
  // The server's errors are OpenAI-shaped: {"error": {"message": ...}}.
  if (response.status === 401) $("key-row").hidden = false;
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (e) {
    return response.statusText;
  }
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) { showError(await failure(response)); return; }
  const body = await response.json();
  state.model = body.data[0].id;
  state.context = body.data[0].max_model_len;
  $("model-name").textContent = `${state.model} (context ${state.context} tokens)`;
  $("max-tokens").max = state.context;
  $("max-tokens").value = Math.min(Number($("max-tokens").value), state.context);
}

// ---------------------------------------------------------------------------------------------
// Streaming: server-sent events, one JSON chunk per "data:" line, ending with [DONE]

async function stream(path, body, onText) {
  state.controller = new AbortController();
  const response = await fetch(path, { method: "POST", headers: headers(), signal: state.controller.signal,
                                       body: JSON.stringify({ ...body, model: state.model, stream: true }) });
  if (!response.ok) throw new Error(await failure(response));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          const piece = choice.text !== undefined ? choice.text : (choice.delta && choice.delta.content) || "";
          if (piece) onText(piece);
        }
      }
    }
  }
}

function busy(yes) {
  $("write").disabled = yes;
  $("stop").disabled = !yes;
}

async function write() {
  showError("");
  const prompt = $("prompt").value;
  $("output-prompt").textContent = prompt;
  $("output-reply").textContent = "";
  busy(true);
  try {
    await stream("/v1/completions", { prompt, max_tokens: Number($("max-tokens").value),
                                      temperature: Number($("temperature").value) },
                 (piece) => { $("output-reply").textContent += piece; });
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
  } finally {
    busy(false);
    state.controller = null;
  }
  await explain({ text: prompt + $("output-reply").textContent }, "write");
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("chat-input").value;
  if (!text.trim()) return;
  showError("");
  $("chat-input").value = "";
  state.chat.push({ role: "user", content: text });
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  try {
    await stream("/v1/chat/completions", { messages: state.chat, max_tokens: Number($("max-tokens").value),
                                           temperature: Number($("temperature").value) },
                 (piece) => { reply.textContent += piece; });
    state.chat.push({ role: "assistant", content: reply.textContent });
  } catch (e) {
    reply.remove();
    state.chat.pop();
    showError(e.message);
    return;
  }
  await explain({ messages: state.chat }, "chat");  // the conversation as the template lays it out
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("messages").appendChild(div);
  return div;
}

// ---------------------------------------------------------------------------------------------
// Explanations

async function explain(what, tab) {
  if (what.text === "") return;
  const response = await fetch("/explain", { method: "POST", headers: headers(), body: JSON.stringify(what) });
  if (!response.ok) { showError(await failure(response)); return; }
  state.explanations[tab] = await response.json();
  if (state.tab === tab) showExplanation(tab);
}

function showExplanation(tab) {
  state.explanation = state.explanations[tab];
  $("explain-panel").hidden = !state.explanation;
  if (!state.explanation) return;
  state.position = null;
  drawTokens();
  fillSelectors();
  $("details").hidden = true;
  $("explain-note").textContent = (state.explanation.note ? "Note: " + state.explanation.note + ". " : "") +
    `These are the ${state.explanation.tokens.length} tokens the model read` +
    (tab === "chat" ? ", the conversation as its chat template lays it out" : "") +
    " (the small number is each token's id). " +
    "Click one to see where its attention goes, what the model guesses comes next, and how that guess forms " +
    "layer by layer.";
}

function drawTokens() {
  const box = $("tokens");
  box.replaceChildren();
  for (const token of state.explanation.tokens) {
    const chip = document.createElement("span");
    chip.className = "tok";
    chip.dataset.position = token.position;
    chip.title = `token #${token.position}, id ${token.id}`;
    chip.append(shown(token.text));
    const id = document.createElement("small");
    id.textContent = token.id;
    chip.appendChild(id);
    chip.addEventListener("click", () => select(token.position));
    box.appendChild(chip);
  }
}

function fillSelectors() {
  const { n_layer, n_head } = state.explanation.model;
  const options = (select, count, extra) => {
    select.replaceChildren();
    for (let i = 0; i < count; i++) select.add(new Option(String(i), String(i)));
    if (extra) select.add(new Option(extra, "mean"));
  };
  options($("layer"), n_layer);
  options($("head"), n_head, "mean of all");
}

function select(position) {
  state.position = position;
  for (const chip of document.querySelectorAll(".tok")) {
    chip.classList.toggle("selected", Number(chip.dataset.position) === position);
  }
  const token = state.explanation.tokens[position];
  $("detail-title").textContent = `Token #${position}: ${shown(token.text)} (id ${token.id})`;
  $("details").hidden = false;
  drawAttention();
  drawNext();
  drawLens();
}

function headWeights() {
  // The (T, T) pattern of the chosen layer and head, or the mean over the layer's heads.
  const layer = state.explanation.attention[Number($("layer").value)];
  if ($("head").value !== "mean") return layer[Number($("head").value)];
  return layer[0].map((row, t) => row.map((_, j) => layer.reduce((sum, head) => sum + head[t][j], 0) / layer.length));
}

function drawAttention() {
  const weights = headWeights();
  const tokens = state.explanation.tokens;
  const table = $("heatmap");
  table.replaceChildren();
  const numbers = table.createTHead().insertRow();  // column numbers: the token each column is
  numbers.appendChild(document.createElement("th"));
  tokens.forEach((_, j) => {
    const th = document.createElement("th");
    th.textContent = j % 5 === 0 ? j : "";  // every fifth: the cells are too narrow for every number
    numbers.appendChild(th);
  });
  const body = table.createTBody();
  weights.forEach((row, t) => {
    const tr = body.insertRow();
    tr.className = t === state.position ? "selected" : "";
    const th = document.createElement("th");
    th.textContent = `${shown(tokens[t].text)} ${t}`;
    tr.appendChild(th);
    row.forEach((w, j) => {
      const td = tr.insertCell();
      if (j > t) { td.className = "future"; return; }
      td.style.background = `rgba(31, 119, 180, ${Math.min(1, w)})`;
      td.title = `${shown(tokens[t].text)} #${t} \u2192 ${shown(tokens[j].text)} #${j}: ${w.toFixed(3)}`;
    });
  });
  const selected = body.rows[state.position];
  const box = table.parentElement;  // scroll the clicked token's row into the middle of the view
  box.scrollTop = Math.max(0, selected.offsetTop - box.clientHeight / 2);
  const mine = weights[state.position].slice(0, state.position + 1)
    .map((w, j) => ({ w, j })).sort((a, b) => b.w - a.w).slice(0, 5);
  fillList($("looks"), mine.map(({ w, j }) => [`${shown(tokens[j].text)} #${j}${j === state.position ? " (itself)" : ""}`, w]));
}

function drawNext() {
  const next = state.explanation.next_token;
  const vocab = state.explanation.vocab;
  const p = state.position;
  fillList($("topk"), next.ids[p].map((id, k) => [shown(vocab[String(id)] || "?"), next.probs[p][k]]));
}

function drawLens() {
  const lens = state.explanation.logit_lens;
  const vocab = state.explanation.vocab;
  const table = $("lens");
  table.replaceChildren();
  const head = table.insertRow();
  for (const name of ["read out", "top guesses (probability)"]) {
    const th = document.createElement("th");
    th.textContent = name;
    head.appendChild(th);
  }
  lens.layers.forEach((layer, n) => {
    const tr = table.insertRow();
    tr.insertCell().textContent = layer;
    tr.insertCell().textContent = lens.ids[n][state.position].slice(0, 3)
      .map((id, k) => `${shown(vocab[String(id)] || "?")} ${lens.probs[n][state.position][k].toFixed(3)}`).join(",  ");
  });
}

function fillList(list, items) {
  list.replaceChildren();
  for (const [label, value] of items) {
    const li = document.createElement("li");
    const piece = document.createElement("span");
    piece.className = "piece";
    piece.textContent = label;
    li.append(piece, ` ${value.toFixed(3)}`);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(120 * value)}px`;
    li.appendChild(bar);
    list.appendChild(li);
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function showTab(name) {
  state.tab = name;
  showExplanation(name);
  $("write-panel").hidden = name !== "write";
  $("chat-panel").hidden = name !== "chat";
  $("tab-write").classList.toggle("active", name === "write");
  $("tab-chat").classList.toggle("active", name === "chat");
}

$("tab-write").addEventListener("click", () => showTab("write"));
$("tab-chat").addEventListener("click", () => showTab("chat"));
$("write").addEventListener("click", write);
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("chat-form").addEventListener("submit", sendChat);
$("api-key").addEventListener("change", () => { state.key = $("api-key").value; loadModel(); });
for (const id of ["layer", "head"]) {
  $(id).addEventListener("change", () => { if (state.position !== null) drawAttention(); });
}
loadModel();
