// Staff dashboard: renders /rooms/status, open /alerts and /dashboard/summary, and re-reads them whenever
// the server's event stream (/events) reports a committed change. Plain browser JavaScript, no build step.
"use strict";

(() => {
  const KEY_STORAGE = "fitting-room.api-key";
  // Several events of one change (a release and its promotion) arrive together: one re-read serves them all.
  const REFRESH_DEBOUNCE_MS = 80;
  // The stream ends every few seconds by design and resumes at once; only a longer gap is worth showing.
  const RECONNECTING_NOTICE_MS = 1500;
  const MAX_RETRY_MS = 5000;
  const REASON_LABELS = {
    missing_items: "Missing items",
    unexpected_items: "Unexpected items",
    tag_swap: "Tag swap",
    overstay: "Overstay",
    unusual_behaviour: "Unusual visit",
  };
  const OUTCOMES = [
    ["theft", "Theft"],
    ["false_alarm", "False alarm"],
    ["item_found", "Item found"],
  ];

  const view = {
    status: null,
    summary: null,
    alerts: [],
    skewMs: 0,
    timeZone: undefined,
    intervals: new Map(),
  };
  let apiKey = readKey();
  let keyPrompt = null;
  let source = null;
  let retryMs = 1000;
  let retryTimer = 0;
  let noticeTimer = 0;
  let refreshTimer = 0;
  let refreshing = false;
  let refreshAgain = false;

  const $ = (id) => document.getElementById(id);

  function readKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  function saveKey(key) {
    apiKey = key;
    try {
      localStorage.setItem(KEY_STORAGE, key);
    } catch {
      // Storage can be disabled (private mode): the key then lasts until the page is closed.
    }
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name === "style") Object.assign(node.style, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // --- time and numbers -------------------------------------------------------------------------------

  function parseTime(text) {
    // The API sends microseconds; keep milliseconds so every engine parses it the same way.
    return Date.parse(text.replace(/(\.\d{3})\d+/, "$1"));
  }

  function serverNow() {
    return Date.now() + view.skewMs;
  }

  function clockTime(ms, withSeconds = false) {
    const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: view.timeZone };
    if (withSeconds) options.second = "2-digit";
    return new Intl.DateTimeFormat(undefined, options).format(new Date(ms));
  }

  function minutes(value) {
    if (value < 1) return "<1 min";
    const whole = Math.round(value);
    if (whole < 60) return `${whole} min`;
    return `${Math.floor(whole / 60)} h ${String(whole % 60).padStart(2, "0")} min`;
  }

  function items(count) {
    return count === 1 ? "1 item" : `${count} items`;
  }

  function waitMinutes(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? `${value.toFixed(1)} min` : `${Math.round(value)} min`;
  }

  // --- HTTP -------------------------------------------------------------------------------------------

  async function api(path, options = {}) {
    for (;;) {
      const headers = new Headers(options.headers || {});
      if (apiKey) headers.set("X-API-Key", apiKey);
      const response = await fetch(path, { ...options, headers, cache: "no-store" });
      if (response.status !== 401 && response.status !== 403) return response;
      let message = "This service needs a staff API key. It is kept on this tablet.";
      if (response.status === 403) message = "That key may not use the staff screen. Enter a staff key.";
      else if (apiKey) message = "That key was refused. Enter a valid staff key.";
      await askForKey(message);
    }
  }

  async function getJson(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(`${path}: ${await detail(response)}`);
    return response.json();
  }

  async function detail(response) {
    try {
      const body = await response.json();
      return typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  function askForKey(message) {
    if (keyPrompt) return keyPrompt;
    keyPrompt = new Promise((resolve) => {
      const dialog = $("key-dialog");
      const input = $("key-input");
      $("key-message").textContent = message;
      input.value = "";
      $("key-form").onsubmit = (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        saveKey(key);
        dialog.close();
        keyPrompt = null;
        connect();
        resolve();
      };
      dialog.showModal();
      input.focus();
    });
    return keyPrompt;
  }

  // --- live updates -----------------------------------------------------------------------------------

  function setLive(state, text) {
    const badge = $("live");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function connect() {
    clearTimeout(retryTimer);
    if (source) source.close();
    // EventSource cannot send headers, so the key travels as a query parameter on this one route.
    const url = apiKey ? `events?api_key=${encodeURIComponent(apiKey)}` : "events";
    const stream = new EventSource(url);
    source = stream;
    stream.addEventListener("open", () => {
      clearTimeout(noticeTimer);
      noticeTimer = 0;
      retryMs = 1000;
      setLive("live", "Live");
    });
    stream.addEventListener("ready", () => scheduleRefresh(0));
    stream.addEventListener("message", () => scheduleRefresh(REFRESH_DEBOUNCE_MS));
    stream.addEventListener("error", () => {
      if (stream !== source) return;
      // Failed attempts repeat every retry interval; the notice counts from the first of them.
      if (!noticeTimer) {
        noticeTimer = setTimeout(() => setLive("connecting", "Reconnecting…"), RECONNECTING_NOTICE_MS);
      }
      if (stream.readyState === EventSource.CLOSED) {
        // The browser gave up (refused key, server error): try again ourselves, and let a re-read
        // discover whether a key is needed.
        retryTimer = setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
        scheduleRefresh(0);
      }
    });
  }

  function scheduleRefresh(delay) {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = 0;
      refresh();
    }, delay);
  }

  async function refresh() {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    try {
      const sent = Date.now();
      const [status, alerts, summary] = await Promise.all([
        getJson("rooms/status"),
        getJson("alerts?status=open"),
        getJson("dashboard/summary"),
      ]);
      view.skewMs = parseTime(status.at) - (sent + Date.now()) / 2;
      view.timeZone = summary.timezone;
      view.status = status;
      view.alerts = alerts.alerts;
      view.summary = summary;
      await loadIntervals(status.rooms);
      showProblem("");
      render();
    } catch (error) {
      showProblem(`Cannot reach the service (${error.message}). Retrying…`);
      scheduleRefresh(2000);
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        scheduleRefresh(0);
      }
    }
  }

  async function loadIntervals(rooms) {
    // /rooms/status has the median only; a session's interval never changes, so it is read once.
    const occupied = new Set(rooms.filter((r) => r.session_id).map((r) => r.session_id));
    for (const id of view.intervals.keys()) if (!occupied.has(id)) view.intervals.delete(id);
    const missing = [...occupied].filter((id) => !view.intervals.has(id));
    const sessions = await Promise.all(missing.map((id) => getJson(`sessions/${encodeURIComponent(id)}`)));
    for (const session of sessions) view.intervals.set(session.session_id, session.interval);
  }

  function showProblem(text) {
    const banner = $("problem");
    banner.textContent = text;
    banner.hidden = !text;
  }

  // --- rendering --------------------------------------------------------------------------------------

  function render() {
    renderRooms();
    renderWaitlist();
    renderAlerts();
    renderSummary();
    renderClock();
  }

  function renderClock() {
    if (view.status) $("clock").textContent = clockTime(serverNow());
  }

  function renderRooms() {
    if (!view.status) return;
    const rooms = view.status.rooms;
    const largest = Math.max(...rooms.map((r) => r.max_items));
    const now = serverNow();
    $("rooms").replaceChildren(...rooms.map((room) => roomTile(room, largest, now)));
    const free = rooms.filter((r) => r.status === "available").length;
    $("rooms-free").textContent = `${free} of ${rooms.length} free`;
  }

  function roomTile(room, largest, now) {
    const tags = el(
      "div",
      { class: "room-tags" },
      room.accessible && el("span", { class: "badge accessible", title: "Accessible room" }, "♿ Accessible"),
      room.max_items >= largest && el("span", { class: "badge large", title: "Takes the largest baskets" }, "Large"),
    );
    const head = (state) =>
      el("div", { class: "room-head" }, el("span", { class: "room-name" }, room.room_id), el("span", { class: "room-state" }, state));
    if (room.status !== "occupied") {
      return el(
        "li",
        { class: "room", dataset: { roomId: room.room_id, status: room.status } },
        head("Free"),
        tags,
        el("p", { class: "room-detail" }, `Takes up to ${items(room.max_items)}`),
      );
    }
    const elapsed = Math.max((now - parseTime(room.entry_time)) / 60000, 0);
    const median = room.predicted_duration;
    const interval = view.intervals.get(room.session_id);
    const high = interval ? interval.high : median;
    const over = elapsed > high;
    const phase = over ? "over" : elapsed >= median ? "due" : "";
    const scale = Math.max(high * 1.15, elapsed * 1.02, 1);
    const pct = (value) => `${Math.min((100 * value) / scale, 100).toFixed(2)}%`;
    const range = interval ? ` (${Math.round(interval.low)}–${Math.round(interval.high)})` : "";
    const band = interval ? `, interval ${Math.round(interval.low)} to ${Math.round(interval.high)} min` : "";
    const bar = el(
      "div",
      {
        class: "bar",
        role: "progressbar",
        "aria-label": `${minutes(elapsed)} of a predicted ${minutes(median)}${band}`,
        "aria-valuemin": 0,
        "aria-valuemax": Math.round(high),
        "aria-valuenow": Math.round(elapsed),
      },
      interval &&
        el("div", {
          class: "bar-band",
          title: `${Math.round(interval.level * 100)}% interval`,
          style: { left: pct(interval.low), width: `calc(${pct(interval.high)} - ${pct(interval.low)})` },
        }),
      el("div", { class: `bar-fill ${phase}`, style: { width: pct(elapsed) } }),
      el("div", { class: "bar-median", style: { left: pct(median) } }),
    );
    const freeAt = room.predicted_free_at ? `Free ≈ ${clockTime(parseTime(room.predicted_free_at))}` : "";
    return el(
      "li",
      {
        class: `room${over ? " over" : ""}`,
        dataset: { roomId: room.room_id, status: room.status, sessionId: room.session_id },
      },
      head(over ? "Over time" : "Occupied"),
      tags,
      el(
        "p",
        { class: "room-detail" },
        `Since ${clockTime(parseTime(room.entry_time))} · ${room.item_count} of ${items(room.max_items)}`,
      ),
      el("p", { class: "room-free" }, freeAt),
      bar,
      el(
        "div",
        { class: "bar-legend" },
        el("span", { class: "elapsed" }, `${minutes(elapsed)} in`),
        over
          ? el("span", { class: "overtime" }, `over by ${minutes(elapsed - high)}`)
          : el(
              "span",
              { class: "predicted", title: `Predicted ${minutes(median)}; most sessions like this take${range}` },
              `~${minutes(median)}${range}`,
            ),
      ),
    );
  }

  function renderWaitlist() {
    if (!view.status) return;
    const waiting = view.status.waitlist;
    $("waitlist").replaceChildren(
      ...waiting.map((entry) =>
        el(
          "li",
          { class: "waiting", dataset: { sessionId: entry.session_id, position: entry.position } },
          el("span", { class: "waiting-position", "aria-label": "Position" }, `#${entry.position}`),
          el(
            "span",
            { class: "waiting-who" },
            `${items(entry.item_count)}${entry.accessible ? " · ♿ accessible" : ""}`,
            el("small", {}, `since ${clockTime(parseTime(entry.arrived_at))} · ${entry.session_id.slice(0, 8)}`),
          ),
          el("span", { class: "waiting-wait" }, `≈ ${minutes(entry.estimated_wait)}`, el("small", {}, "est. wait")),
        ),
      ),
    );
    $("waitlist-count").textContent = waiting.length ? `${waiting.length}` : "";
    $("waitlist-empty").hidden = waiting.length > 0;
  }

  function renderAlerts() {
    const alerts = view.alerts;
    $("alerts").replaceChildren(...alerts.map(alertCard));
    $("alerts-count").textContent = alerts.length ? `${alerts.length}` : "";
    $("alerts-empty").hidden = alerts.length > 0;
  }

  function alertCard(alert) {
    const card = el("li", { class: "alert", dataset: { alertId: alert.alert_id, sessionId: alert.session_id } });
    const buttons = OUTCOMES.map(([outcome, label]) =>
      el("button", { type: "button", class: outcome, onclick: () => resolve(alert.alert_id, outcome, card) }, label),
    );
    card.append(
      el(
        "div",
        { class: "alert-head" },
        el("span", { class: "alert-room" }, alert.room_id),
        el("span", { class: `badge risk-${alert.risk_level}` }, `${alert.risk_level} risk`),
        el("span", { class: "alert-time" }, clockTime(parseTime(alert.raised_at))),
      ),
      el(
        "ul",
        { class: "reasons" },
        alert.reasons.map((reason) =>
          el(
            "li",
            { class: "reason", dataset: { code: reason.code } },
            el("span", { class: "reason-code" }, `${REASON_LABELS[reason.code] || reason.code}: `),
            reason.message,
          ),
        ),
      ),
      el("div", { class: "actions", role: "group", "aria-label": "Resolve as" }, buttons),
    );
    return card;
  }

  async function resolve(alertId, outcome, card) {
    const buttons = card.querySelectorAll("button");
    for (const button of buttons) button.disabled = true;
    try {
      const response = await api(`alerts/${alertId}/resolve`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ outcome }),
      });
      // 409: a colleague resolved it first; the re-read shows the current state either way.
      if (!response.ok && response.status !== 409) throw new Error(await detail(response));
      card.remove();
      scheduleRefresh(0);
    } catch (error) {
      showProblem(`Could not resolve alert ${alertId}: ${error.message}`);
      for (const button of buttons) button.disabled = false;
    }
  }

  function renderSummary() {
    const s = view.summary;
    if (!s) return;
    $("stat-sessions").textContent = String(s.sessions_started);
    $("stat-mean-wait").textContent = waitMinutes(s.mean_wait);
    $("stat-p90-wait").textContent = waitMinutes(s.p90_wait);
    $("stat-alerts-raised").textContent = String(s.alerts_raised);
    $("stat-alerts-resolved").textContent = String(s.alerts_resolved);
  }

  function tick() {
    // Elapsed times move every second without asking the server.
    renderRooms();
    renderClock();
  }

  document.addEventListener("DOMContentLoaded", () => {
    // A staff key is required to use the screen at all: Escape must not dismiss the prompt.
    $("key-dialog").addEventListener("cancel", (event) => event.preventDefault());
    connect();
    scheduleRefresh(0);
    setInterval(tick, 1000);
  });
})();
