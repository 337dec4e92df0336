// The Tributary console: plain JavaScript over the HTTP API and /api/realtime. No build step,
// no dependencies. Everything the server sends is inserted as text, never as HTML.
"use strict";

const EXCHANGES = ["okx", "binance", "bybit", "coinbase", "kraken", "custom"];
const SECRET_FIELDS = ["api_key", "api_secret", "passphrase", "bearer_token"];
const JSON_FIELDS = ["subscription_message", "request_body", "headers", "query_params", "field_mapping"];
const LIVE_ROWS = 200;

const state = {
  token: sessionStorage.getItem("tributary.token") || "",
  tokenRequired: false,
  connectors: new Map(),
  editing: null,
  view: "connectors",
  live: { socket: null, paused: false, skipped: 0, received: 0, retry: 0, timer: null },
  chart: { socket: null, candles: [], instrument: "", exchange: "", minutes: 60, timer: null, retry: 0 },
  cursors: { "dead-letters": null, batches: null },
};

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "type" || key === "title") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

// --- The API ---------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    showBanner("The server does not answer: " + error.message);
    throw new ApiError(0, { detail: "The server does not answer" });
  }
  let json = null;
  try {
    json = await response.json();
  } catch (_) {
    json = null;
  }
  if (response.status === 401) {
    state.tokenRequired = true;
    askForToken(state.token ? "That token was not accepted." : "");
    throw new ApiError(401, json);
  }
  if (response.status === 503) showBanner((json && json.detail) || "The database is unavailable; retrying.");
  else if (response.ok) hideBanner();
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

function showBanner(text) {
  const banner = $("#banner");
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  $("#banner").hidden = true;
}

// --- Token -----------------------------------------------------------------------------------

function askForToken(problem) {
  const dialog = $("#token-dialog");
  $("#token-error").textContent = problem || "";
  $("#token-button").hidden = false;
  if (!dialog.open) {
    $("#token-input").value = "";
    dialog.showModal();
    $("#token-input").focus();
  }
}

function setupToken() {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#token-input").value.trim();
    if (!value) {
      $("#token-error").textContent = "Enter a token.";
      return;
    }
    state.token = value;
    sessionStorage.setItem("tributary.token", value);
    $("#token-dialog").close();
    refreshConnectors();
    restartSockets();
    if (state.view === "dead-letters" || state.view === "batches") loadTable(state.view, true);
  });
  $("#token-button").addEventListener("click", () => askForToken(""));
}

// --- Views -----------------------------------------------------------------------------------

function showView(view, focus) {
  if (!document.getElementById("view-" + view)) view = "connectors";
  state.view = view;
  for (const tab of $$("[role=tab]")) {
    const selected = tab.dataset.view === view;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected && focus) tab.focus();
  }
  for (const panel of $$("[role=tabpanel]")) panel.hidden = panel.id !== "view-" + view;
  if (location.hash !== "#" + view) history.replaceState(null, "", "#" + view);
  if (view === "live") connectLive();
  if (view === "chart") loadChart();
  if (view === "dead-letters" || view === "batches") loadTable(view, true);
  if (view === "instances") loadInstances();
}

function setupTabs() {
  const tabs = $$("[role=tab]");
  for (const tab of tabs) {
    tab.addEventListener("click", () => showView(tab.dataset.view, false));
    tab.addEventListener("keydown", (event) => {
      const index = tabs.indexOf(tab);
      let next = null;
      if (event.key === "ArrowRight") next = tabs[(index + 1) % tabs.length];
      if (event.key === "ArrowLeft") next = tabs[(index - 1 + tabs.length) % tabs.length];
      if (event.key === "Home") next = tabs[0];
      if (event.key === "End") next = tabs[tabs.length - 1];
      if (next) {
        event.preventDefault();
        showView(next.dataset.view, true);
      }
    });
  }
  window.addEventListener("hashchange", () => showView(location.hash.slice(1), false));
}

// --- Connectors ------------------------------------------------------------------------------

function relativeTime(iso) {
  if (!iso) return "—";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return iso;
  if (seconds < 2) return "just now";
  if (seconds < 90) return seconds + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  return new Date(iso).toLocaleString();
}

async function refreshConnectors() {
  let body;
  try {
    body = await api("GET", "/api/connectors?limit=1000");
  } catch (_) {
    return;
  }
  const seen = new Set();
  const tbody = $("#connectors-table tbody");
  for (const connector of body.data || []) {
    seen.add(connector.connector_id);
    state.connectors.set(connector.connector_id, connector);
    let row = tbody.querySelector(`tr[data-id="${CSS.escape(connector.connector_id)}"]`);
    if (!row) {
      row = connectorRow(connector);
      tbody.append(row);
    }
    updateConnectorRow(row, connector);
  }
  for (const row of $$("tr[data-id]", tbody)) {
    if (!seen.has(row.dataset.id)) {
      row.remove();
      state.connectors.delete(row.dataset.id);
    }
  }
  $("#connectors-empty").hidden = seen.size > 0;
  updateConnectorChoices();
}

function connectorRow(connector) {
  const id = connector.connector_id;
  const row = element("tr", { "data-id": id });
  const name = element("td", { class: "name" });
  row.append(
    name,
    element("td", { class: "type" }),
    element("td", { class: "exchange" }),
    element("td", { class: "status" }),
    element("td", { class: "num rate" }),
    element("td", { class: "last" }),
    element("td", { class: "num reconnects" }),
    element("td", { class: "error" })
  );
  const actions = element("td", { class: "actions" });
  for (const [action, label] of [["start", "Start"], ["stop", "Stop"], ["restart", "Restart"], ["test", "Test"], ["edit", "Edit"], ["delete", "Delete"]]) {
    const button = element("button", {
      type: "button",
      class: "small " + (action === "delete" ? "danger" : action === "start" ? "" : "secondary"),
      text: label,
      "data-action": action,
      "aria-label": `${label} ${connector.name}`,
    });
    button.addEventListener("click", () => connectorAction(row.dataset.id, action, button));
    actions.append(button);
  }
  row.append(actions);
  return row;
}

function updateConnectorRow(row, connector) {
  const metrics = connector.performance_metrics || {};
  const name = $(".name", row);
  name.textContent = connector.name;
  if (connector.demo) name.append(element("span", { class: "tag", text: "demo" }));
  $(".type", row).textContent = connector.connector_type;
  $(".exchange", row).textContent = connector.exchange;
  const status = $(".status", row);
  status.replaceChildren(element("span", { class: "badge status-" + connector.status, text: connector.status }));
  $(".rate", row).textContent = metrics.messages_per_second !== undefined ? String(metrics.messages_per_second) : "—";
  const last = $(".last", row);
  last.textContent = relativeTime(metrics.last_message_at);
  if (metrics.last_message_at) last.title = metrics.last_message_at;
  $(".reconnects", row).textContent = String(metrics.reconnects || 0);
  $(".error", row).textContent = connector.last_error || "";
  const running = connector.desired_state === "running";
  $("[data-action=start]", row).disabled = running && connector.status !== "error";
  $("[data-action=stop]", row).disabled = !running;
  for (const button of $$("button", row)) button.setAttribute("aria-label", `${button.textContent} ${connector.name}`);
}

async function connectorAction(id, action, button) {
  const connector = state.connectors.get(id);
  if (!connector) return;
  if (action === "edit") return openConnectorForm(connector);
  if (action === "delete") return confirmDelete(connector);
  button.disabled = true;
  try {
    if (action === "test") {
      const result = await api("POST", `/api/connectors/${encodeURIComponent(id)}/test`);
      $("#test-output").textContent = JSON.stringify(result.data !== undefined ? result.data : result, null, 2);
      $("#test-result").hidden = false;
    } else {
      await api("POST", `/api/connectors/${encodeURIComponent(id)}/${action}`);
    }
  } catch (error) {
    if (error.status !== 401) {
      $("#test-output").textContent = `${action} failed: ${error.message}`;
      $("#test-result").hidden = false;
    }
  } finally {
    button.disabled = false;
    refreshConnectors();
  }
}

function confirmDelete(connector) {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = `Delete ${connector.name}? Its status and REST poll results go with it; stored messages stay.`;
  dialog.returnValue = "";
  dialog.showModal();
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "confirm") return;
      try {
        await api("DELETE", `/api/connectors/${encodeURIComponent(connector.connector_id)}`);
      } catch (_) {
        /* shown by refresh */
      }
      refreshConnectors();
    },
    { once: true }
  );
}

// --- The connector form ----------------------------------------------------------------------

function fillSelect(select, values, anyLabel) {
  const current = select.value;
  select.replaceChildren();
  if (anyLabel !== undefined) select.append(element("option", { value: "", text: anyLabel }));
  for (const value of values) {
    const option = Array.isArray(value) ? element("option", { value: value[0], text: value[1] }) : element("option", { value, text: value });
    select.append(option);
  }
  if ([...select.options].some((option) => option.value === current)) select.value = current;
}

function updateFormSections() {
  const type = $("#f-connector_type").value;
  const auth = $("#f-auth_type").value;
  for (const field of $$("#connector-form .field")) {
    let visible = true;
    if (field.classList.contains("rest-only")) visible = type === "rest";
    if (field.classList.contains("ws-only")) visible = type === "websocket";
    const authClasses = [...field.classList].filter((name) => name.startsWith("auth-"));
    if (authClasses.length) visible = visible && authClasses.includes("auth-" + auth);
    field.hidden = !visible;
  }
}

function clearErrors() {
  $("#form-error").textContent = "";
  for (const error of $$("#connector-form .field-error")) if (error.id !== "form-error") error.textContent = "";
  for (const input of $$("#connector-form [aria-invalid]")) input.removeAttribute("aria-invalid");
}

function showFieldError(field, problem) {
  const container = $(`#connector-form .field[data-field="${CSS.escape(field)}"]`);
  if (!container) return false;
  container.hidden = false;
  $(".field-error", container).textContent = problem;
  const input = $("input, select, textarea", container);
  if (input) input.setAttribute("aria-invalid", "true");
  return true;
}

function openConnectorForm(connector) {
  const form = $("#connector-form");
  form.reset();
  clearErrors();
  state.editing = connector || null;
  $("#connector-title").textContent = connector ? `Edit ${connector.name}` : "New connector";
  $("#secret-note").hidden = !connector;
  if (connector) {
    for (const name of ["name", "connector_type", "api_url", "exchange", "http_method", "auth_type", "polling_interval"]) {
      const input = form.elements[name];
      if (input && connector[name] !== undefined && connector[name] !== null) input.value = String(connector[name]);
    }
    for (const name of JSON_FIELDS) {
      const value = connector[name];
      const empty = value === null || value === undefined || (typeof value === "object" && !Array.isArray(value) && Object.keys(value).length === 0);
      form.elements[name].value = empty ? "" : JSON.stringify(value);
      form.elements[name].dataset.initial = form.elements[name].value;
    }
    const signing = connector.signing;
    form.elements.signing.value = signing === null || signing === undefined ? "" : typeof signing === "string" ? signing : JSON.stringify(signing);
    for (const name of SECRET_FIELDS) {
      const has = connector["has_" + name];
      form.elements[name].placeholder = has ? "stored; leave empty to keep" : "";
    }
  } else {
    form.elements.exchange.value = "";
    for (const name of JSON_FIELDS) delete form.elements[name].dataset.initial;
    for (const name of SECRET_FIELDS) form.elements[name].placeholder = "";
  }
  updateFormSections();
  $("#connector-dialog").showModal();
  form.elements.name.focus();
}

function connectorPayload() {
  const form = $("#connector-form");
  const body = {};
  const problems = [];
  const value = (name) => form.elements[name].value.trim();
  body.name = value("name");
  body.connector_type = value("connector_type");
  body.api_url = value("api_url");
  if (value("exchange")) body.exchange = value("exchange");
  body.auth_type = value("auth_type");
  if (body.connector_type === "rest") {
    body.http_method = value("http_method");
    const interval = value("polling_interval");
    if (interval) body.polling_interval = Number(interval);
  }
  for (const name of JSON_FIELDS) {
    const input = form.elements[name];
    const text = input.value.trim();
    if (state.editing && input.dataset.initial !== undefined && text === input.dataset.initial) continue;
    if (input.closest(".field").hidden && !text) continue;
    if (!text) {
      if (state.editing) body[name] = null;
      continue;
    }
    try {
      body[name] = JSON.parse(text);
    } catch (error) {
      problems.push([name, "is not valid JSON: " + error.message]);
    }
  }
  const signing = value("signing");
  if (signing && !form.elements.signing.closest(".field").hidden) {
    if (signing.startsWith("{")) {
      try {
        body.signing = JSON.parse(signing);
      } catch (error) {
        problems.push(["signing", "is not valid JSON: " + error.message]);
      }
    } else body.signing = signing;
  }
  for (const name of SECRET_FIELDS) {
    const secret = form.elements[name].value;
    if (secret && !form.elements[name].closest(".field").hidden) body[name] = secret;
  }
  return { body, problems };
}

function setupConnectorForm() {
  fillSelect($("#f-exchange"), EXCHANGES, "infer from the URL");
  $("#f-connector_type").addEventListener("change", updateFormSections);
  $("#f-auth_type").addEventListener("change", updateFormSections);
  $("#new-connector").addEventListener("click", () => openConnectorForm(null));
  $("#connector-cancel").addEventListener("click", () => $("#connector-dialog").close());
  $("#connector-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const { body, problems } = connectorPayload();
    if (problems.length) {
      for (const [field, problem] of problems) showFieldError(field, problem);
      focusFirstError();
      return;
    }
    const save = $("#connector-save");
    save.disabled = true;
    try {
      if (state.editing) await api("PUT", `/api/connectors/${encodeURIComponent(state.editing.connector_id)}`, body);
      else await api("POST", "/api/connectors", body);
      $("#connector-dialog").close();
      refreshConnectors();
    } catch (error) {
      const errors = (error.body && error.body.errors) || [];
      let shown = 0;
      for (const item of errors) if (showFieldError(item.field, item.problem)) shown += 1;
      if (shown < errors.length || errors.length === 0) $("#form-error").textContent = error.message;
      focusFirstError();
    } finally {
      save.disabled = false;
    }
  });
}

function focusFirstError() {
  const invalid = $("#connector-form [aria-invalid=true]");
  if (invalid) invalid.focus();
}

function updateConnectorChoices() {
  const connectors = [...state.connectors.values()].map((connector) => [connector.connector_id, connector.name]);
  fillSelect($("#live-connector"), connectors, "any");
}

// --- Realtime --------------------------------------------------------------------------------

function realtimeURL(filters) {
  const url = new URL("/api/realtime", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(filters)) if (value) url.searchParams.set(key, value);
  if (state.token) url.searchParams.set("token", state.token);
  return url.toString();
}

function openSocket(holder, filters, onUpdate, onStatus) {
  if (holder.socket) {
    holder.socket.onclose = null;
    holder.socket.close();
  }
  clearTimeout(holder.timer);
  const socket = new WebSocket(realtimeURL(filters));
  holder.socket = socket;
  onStatus("connecting");
  socket.onopen = () => {
    holder.retry = 0;
  };
  socket.onmessage = (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    if (message.type === "connected") onStatus("live");
    else if (message.type === "data_update" && message.data) onUpdate(message.data);
    else if (message.type === "error") onStatus("error: " + (message.detail || message.error_code));
  };
  socket.onclose = () => {
    if (holder.socket !== socket) return;
    onStatus("disconnected; reconnecting");
    holder.retry = Math.min(holder.retry + 1, 6);
    holder.timer = setTimeout(() => openSocket(holder, filters, onUpdate, onStatus), 500 * 2 ** holder.retry);
  };
}

function closeSocket(holder) {
  clearTimeout(holder.timer);
  if (holder.socket) {
    holder.socket.onclose = null;
    holder.socket.close();
    holder.socket = null;
  }
}

function restartSockets() {
  if (state.live.socket) connectLive();
  if (state.chart.socket) connectChart();
}

function liveFilters() {
  return {
    connector_id: $("#live-connector").value,
    exchange: $("#live-exchange").value,
    instrument: $("#live-instrument").value.trim(),
  };
}

function connectLive() {
  openSocket(state.live, liveFilters(), addLiveRow, (text) => ($("#live-status").textContent = text));
}

function addLiveRow(data) {
  state.live.received += 1;
  if (state.live.paused) {
    state.live.skipped += 1;
    $("#live-count").textContent = `paused; ${state.live.skipped} not shown`;
    return;
  }
  const connector = state.connectors.get(data.connector_id);
  const time = data.timestamp || data.exchange_timestamp || "";
  const row = element(
    "tr",
    {},
    element("td", { class: "mono", text: time.replace("T", " ").replace(/\.\d+Z$/, "Z"), title: time }),
    element("td", { text: connector ? connector.name : data.connector_id }),
    element("td", { text: data.exchange || "" }),
    element("td", { text: data.instrument || "" }),
    element("td", { text: data.message_type || "" }),
    element("td", { class: "num mono", text: data.price || "" }),
    element("td", { class: "num mono", text: data.quantity || "" }),
    element("td", { class: data.side ? "side-" + data.side : "", text: data.side || "" }),
    element("td", { class: "num mono", text: data.id === null || data.id === undefined ? "pending" : String(data.id) })
  );
  const tbody = $("#live-table tbody");
  tbody.prepend(row);
  while (tbody.rows.length > LIVE_ROWS) tbody.deleteRow(tbody.rows.length - 1);
  $("#live-count").textContent = `${state.live.received} received`;
}

function setupLive() {
  fillSelect($("#live-exchange"), EXCHANGES, "any");
  $("#live-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    $("#live-table tbody").replaceChildren();
    connectLive();
  });
  $("#live-pause").addEventListener("click", () => {
    state.live.paused = !state.live.paused;
    state.live.skipped = 0;
    const button = $("#live-pause");
    button.setAttribute("aria-pressed", String(state.live.paused));
    button.textContent = state.live.paused ? "Resume" : "Pause";
  });
}

// --- Chart -----------------------------------------------------------------------------------

async function loadChart() {
  const instrument = $("#chart-instrument").value.trim().toUpperCase();
  if (!instrument) return;
  const exchange = $("#chart-exchange").value;
  const minutes = Number($("#chart-span").value) || 60;
  Object.assign(state.chart, { instrument, exchange, minutes });
  const since = new Date(Date.now() - minutes * 60000).toISOString();
  const query = new URLSearchParams({ interval: "1m", since });
  if (exchange) query.set("exchange", exchange);
  $("#chart-status").textContent = "loading";
  try {
    const body = await api("GET", `/api/instruments/${encodeURIComponent(instrument)}/history?${query}`);
    state.chart.candles = (body.data || []).map((candle) => ({
      time: Date.parse(candle.time),
      open: Number(candle.open),
      high: Number(candle.high),
      low: Number(candle.low),
      close: Number(candle.close),
      count: candle.trade_count,
    }));
    drawChart();
    connectChart();
  } catch (error) {
    $("#chart-status").textContent = error.message;
  }
}

function connectChart() {
  const { instrument, exchange } = state.chart;
  openSocket(state.chart, { instrument, exchange }, addChartTrade, (text) => ($("#chart-status").textContent = text));
}

function addChartTrade(data) {
  if (data.message_type !== "trade" || !data.price) return;
  const price = Number(data.price);
  const time = Date.parse(data.timestamp || data.exchange_timestamp || new Date().toISOString());
  if (!Number.isFinite(price) || !Number.isFinite(time)) return;
  const bucket = Math.floor(time / 60000) * 60000;
  const candles = state.chart.candles;
  const last = candles[candles.length - 1];
  if (last && last.time === bucket) {
    last.high = Math.max(last.high, price);
    last.low = Math.min(last.low, price);
    last.close = price;
    last.count += 1;
  } else if (!last || bucket > last.time) {
    candles.push({ time: bucket, open: price, high: price, low: price, close: price, count: 1 });
    const keep = state.chart.minutes + 1;
    if (candles.length > keep) candles.splice(0, candles.length - keep);
  } else return;
  scheduleDraw();
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawChart();
  });
}

function drawChart() {
  const canvas = $("#chart");
  const candles = state.chart.candles;
  const trades = candles.reduce((sum, candle) => sum + candle.count, 0);
  canvas.dataset.candles = String(candles.length);
  canvas.dataset.trades = String(trades);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 960;
  const height = Math.round(width * 0.44);
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  const styles = getComputedStyle(document.documentElement);
  const color = (name) => styles.getPropertyValue(name).trim();
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  context.font = "12px system-ui, sans-serif";
  const last = candles[candles.length - 1];
  const title = `${state.chart.instrument}${state.chart.exchange ? " on " + state.chart.exchange : ""}, 1-minute candles`;
  canvas.setAttribute("aria-label", last ? `${title}; last close ${last.close}` : `${title}; no trades in range`);
  $("#chart-caption").textContent = last
    ? `${candles.length} candles, ${trades} trades; last ${last.close} at ${new Date(last.time).toLocaleTimeString()}`
    : "No trades in this range yet.";
  if (!candles.length) return;
  const left = 8;
  const right = 74;
  const top = 10;
  const bottom = 24;
  let low = Math.min(...candles.map((candle) => candle.low));
  let high = Math.max(...candles.map((candle) => candle.high));
  if (high === low) {
    high += Math.abs(high) * 0.0005 || 1;
    low -= Math.abs(low) * 0.0005 || 1;
  }
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const y = (price) => top + ((high - price) / (high - low)) * plotHeight;
  const slots = Math.max(candles.length, state.chart.minutes);
  const step = plotWidth / slots;
  const start = last.time - (slots - 1) * 60000;
  const x = (time) => left + ((time - start) / 60000 + 0.5) * step;
  context.strokeStyle = color("--grid");
  context.fillStyle = color("--muted");
  context.lineWidth = 1;
  for (let line = 0; line <= 4; line += 1) {
    const price = low + ((high - low) * line) / 4;
    const lineY = Math.round(y(price)) + 0.5;
    context.beginPath();
    context.moveTo(left, lineY);
    context.lineTo(width - right, lineY);
    context.stroke();
    context.fillText(price.toPrecision(7), width - right + 6, lineY + 4);
  }
  for (let index = 0; index < slots; index += Math.max(1, Math.round(slots / 6))) {
    const time = start + index * 60000;
    context.fillText(new Date(time).toTimeString().slice(0, 5), x(time) - 14, height - 6);
  }
  const body = Math.max(1, step * 0.6);
  for (const candle of candles) {
    if (candle.time < start) continue;
    const up = candle.close >= candle.open;
    context.strokeStyle = context.fillStyle = color(up ? "--up" : "--down");
    const center = Math.round(x(candle.time)) + 0.5;
    context.beginPath();
    context.moveTo(center, y(candle.high));
    context.lineTo(center, y(candle.low));
    context.stroke();
    const top = Math.min(y(candle.open), y(candle.close));
    context.fillRect(center - body / 2, top, body, Math.max(1, Math.abs(y(candle.open) - y(candle.close))));
  }
}

function setupChart() {
  fillSelect($("#chart-exchange"), EXCHANGES, "all");
  $("#chart-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadChart();
  });
  window.addEventListener("resize", scheduleDraw);
}

// --- Dead letters and batches ----------------------------------------------------------------

async function loadTable(view, fresh) {
  const path = view === "batches" ? "/api/batches" : "/api/dead-letters";
  const query = new URLSearchParams({ limit: "50" });
  if (!fresh && state.cursors[view]) query.set("cursor", state.cursors[view]);
  let body;
  try {
    body = await api("GET", `${path}?${query}`);
  } catch (_) {
    return;
  }
  const tbody = $(`#${view}-table tbody`);
  if (fresh) tbody.replaceChildren();
  for (const row of body.data || []) tbody.append(view === "batches" ? batchRow(row) : deadLetterRow(row));
  state.cursors[view] = body.next_cursor || null;
  $(`[data-more="${view}"]`).hidden = !body.next_cursor;
  if (!tbody.rows.length) tbody.append(element("tr", {}, element("td", { colSpan: 6, class: "empty", text: "Nothing here." })));
}

function connectorName(id) {
  const connector = state.connectors.get(id);
  return connector ? connector.name : id || "";
}

function deadLetterRow(letter) {
  return element(
    "tr",
    {},
    element("td", { class: "mono", text: letter.timestamp || "" }),
    element("td", { text: connectorName(letter.connector_id) }),
    element("td", { text: letter.stage || "" }),
    element("td", { text: letter.reason || "" }),
    element("td", { class: "error", text: letter.error || "" }),
    element("td", { class: "raw mono", text: String(letter.raw || "").slice(0, 2000) })
  );
}

function batchRow(batch) {
  const metrics = batch.metrics || {};
  const summary = Object.entries(metrics)
    .map(([key, value]) => `${key}=${typeof value === "object" ? JSON.stringify(value) : value}`)
    .join(" ");
  return element(
    "tr",
    {},
    element("td", { class: "mono", text: batch.timestamp || "" }),
    element("td", { class: "mono", text: batch.batch_id || "" }),
    element("td", { text: connectorName(batch.connector_id) }),
    element("td", { class: "num", text: String(batch.message_count ?? "") }),
    element("td", { class: "raw mono", text: summary })
  );
}

async function loadInstances() {
  let body;
  try {
    body = await api("GET", "/api/instances");
  } catch (_) {
    return;
  }
  const tbody = $("#instances-table tbody");
  tbody.replaceChildren();
  for (const instance of body.data || []) {
    const name = element("td", { class: "mono", text: instance.instance_id });
    if (instance.self) name.append(element("span", { class: "tag", text: "this one" }));
    const status = instance.status === "alive" ? "running" : instance.status === "stopped" ? "stopped" : "error";
    tbody.append(
      element(
        "tr",
        {},
        name,
        element("td", {}, element("span", { class: "badge status-" + status, text: instance.status })),
        element("td", { class: "mono", text: instance.address || "" }),
        element("td", { text: instance.version || "" }),
        element("td", { text: relativeTime(instance.heartbeat_at), title: instance.heartbeat_at || "" }),
        element("td", { class: "num", text: instance.messages_per_second == null ? "—" : String(instance.messages_per_second) }),
        element("td", { text: (instance.connectors || []).map(connectorName).join(", ") || "—" })
      )
    );
  }
}

function setupTables() {
  for (const button of $$("[data-refresh]")) {
    button.addEventListener("click", () => (button.dataset.refresh === "instances" ? loadInstances() : loadTable(button.dataset.refresh, true)));
  }
  for (const button of $$("[data-more]")) button.addEventListener("click", () => loadTable(button.dataset.more, false));
}

// --- Start -----------------------------------------------------------------------------------

function start() {
  setupToken();
  setupTabs();
  setupConnectorForm();
  setupLive();
  setupChart();
  setupTables();
  $("#test-close").addEventListener("click", () => ($("#test-result").hidden = true));
  if (state.token) $("#token-button").hidden = false;
  refreshConnectors().then(() => showView(location.hash.slice(1) || "connectors", false));
  setInterval(() => {
    if (document.hidden || $("#token-dialog").open) return;
    refreshConnectors();
    if (state.view === "instances") loadInstances();
  }, 2000);
}

start();
