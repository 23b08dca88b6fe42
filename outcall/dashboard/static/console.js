// The console's live parts. Every value from the server lands in the page through textContent or
// an attribute, never innerHTML: transcripts are what callees said, names come from CSV files.

const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

function setText(root, field, value) {
  const element = root.querySelector(`[data-field="${field}"]`);
  if (element) element.textContent = value ?? "–";
}

function since(iso) {
  const secs = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
}

export function listen(params, handlers) {
  const url = `/console/events?${new URLSearchParams(params)}`;
  const source = new EventSource(url);  // reconnects by itself, resuming from Last-Event-ID
  for (const [event, handle] of Object.entries(handlers)) {
    source.addEventListener(event, (message) => handle(JSON.parse(message.data)));
  }
  window.consoleEvents = source;
  return source;
}

// --- overview: calls in progress, today's figures, running campaigns ---------------------------

function overview(table) {
  const body = table.tBodies[0];
  const template = document.getElementById("live-call-row");
  const emptyNote = document.querySelector("[data-empty-note]");
  const tick = () => {
    for (const cell of body.querySelectorAll('[data-field="duration"]')) {
      if (cell.dataset.started) cell.textContent = since(cell.dataset.started);
    }
  };
  const update = (call) => {
    let row = body.querySelector(`tr[data-call-id="${CSS.escape(call.id)}"]`);
    if (call.final) {
      row?.remove();
    } else {
      if (!row) {
        row = template.content.firstElementChild.cloneNode(true);
        row.dataset.callId = call.id;
        const link = row.querySelector('[data-field="link"]');
        link.href = `/console/calls/${encodeURIComponent(call.id)}`;
        link.textContent = call.to_number;
        if (call.campaign_id) {
          const campaign = row.querySelector('[data-field="campaign"]');
          campaign.href = `/console/campaigns/${encodeURIComponent(call.campaign_id)}`;
          campaign.textContent = call.campaign_name || "campaign";
          campaign.hidden = false;
        }
        row.querySelector('[data-field="hangup"]').action = `/console/calls/${encodeURIComponent(call.id)}/hangup`;
        body.prepend(row);
      }
      setText(row, "status", call.status);
      setText(row, "last_line", call.last_line);
      row.querySelector('[data-field="duration"]').dataset.started = call.answered_at ?? call.created_at;
    }
    emptyNote.hidden = body.rows.length > 0;
    tick();
  };
  const figures = ({ figures, campaigns }) => {
    const show = (name, text) => {
      const element = document.querySelector(`[data-figure="${name}"]`);
      if (element) element.textContent = text;
    };
    show("placed", figures.placed);
    show("answered", figures.answered);
    show("pickup_rate", figures.pickup_rate == null ? "–" : `${Math.round(figures.pickup_rate * 100)}%`);
    show("average_talk_secs", figures.average_talk_secs == null ? "–" : `${Math.round(figures.average_talk_secs)} s`);
    const outcomes = document.querySelector('[data-figure="outcomes"]');
    outcomes.replaceChildren(...Object.entries(figures.outcomes).map(([name, count]) => {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = `${name}: ${count}`;
      return tag;
    }));
    const list = document.querySelector("[data-running-campaigns]");
    list.replaceChildren(...campaigns.map((campaign) => {
      const box = document.createElement("div");
      box.className = "campaign-progress";
      box.dataset.campaignId = campaign.id;
      const link = document.createElement("a");
      link.href = `/console/campaigns/${encodeURIComponent(campaign.id)}`;
      link.textContent = campaign.name;
      const status = document.createElement("span");
      status.className = "tag";
      status.textContent = campaign.status;
      const bar = document.createElement("progress");
      bar.max = campaign.contacts || 1;
      bar.value = campaign.done;
      const text = document.createElement("span");
      text.textContent = `${campaign.done} of ${campaign.contacts} done, ${campaign.in_progress} in progress`;
      box.append(link, " ", status, " ", bar, " ", text);
      if (campaign.status_reason) {
        const reason = document.createElement("p");
        reason.className = "reason";
        reason.textContent = campaign.status_reason;
        box.append(reason);
      }
      return box;
    }));
  };
  tick();
  setInterval(tick, 1000);
  listen({ since: table.dataset.since }, { call: update, figures });
}

// --- one call: status, timeline and the transcript as it grows ---------------------------------

export function turnElement(turn) {
  const item = document.createElement("li");
  item.className = `turn ${turn.speaker === "bot" ? "bot" : "callee"}${turn.interrupted ? " interrupted" : ""}`;
  const speaker = document.createElement("span");
  speaker.className = "speaker";
  speaker.textContent = turn.speaker;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = turn.text;
  item.append(speaker, text);
  if (turn.latency_ms != null) {
    const latency = document.createElement("span");
    latency.className = "latency";
    latency.textContent = `${turn.latency_ms} ms`;
    item.append(latency);
  }
  if (turn.interrupted) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "interrupted";
    item.append(tag);
  }
  return item;
}

function callPage(root) {
  const update = (call) => {
    for (const field of ["status", "end_reason", "answered_by", "outcome", "outcome_notes", "callback_time", "summary"]) {
      setText(root, field, call[field]);
    }
    setText(root, "talk_secs", call.talk_secs == null ? null : `${Math.round(call.talk_secs)} s`);
    root.querySelector('[data-field="transcript"]').replaceChildren(...call.transcript.map(turnElement));
    const analysis = Object.entries(call.analysis ?? {});
    if (analysis.length) {
      root.querySelector('[data-field="analysis"]').replaceChildren(...analysis.flatMap(([name, value]) => {
        const term = document.createElement("dt");
        term.textContent = name;
        const detail = document.createElement("dd");
        if (value === null) {
          detail.className = "empty";
          detail.textContent = `– ${call.analysis_errors?.[name] ?? ""}`;
        } else {
          detail.textContent = typeof value === "string" ? value : JSON.stringify(value);
        }
        return [term, detail];
      }));
    }
    root.querySelector('[data-field="no-transcript"]').hidden = call.transcript.length > 0;
    root.querySelector('[data-field="timeline"]').replaceChildren(...call.timeline.map((change) => {
      const item = document.createElement("li");
      const status = document.createElement("span");
      status.textContent = change.status;
      const at = document.createElement("time");
      at.dateTime = change.at;
      at.textContent = new Date(change.at).toLocaleTimeString();
      item.append(status, " ", at);
      return item;
    }));
    if (["completed", "busy", "no-answer", "failed", "canceled"].includes(call.status)) {
      root.querySelector('[data-field="hangup"]')?.remove();
    }
    root.dataset.updates = String(Number(root.dataset.updates ?? 0) + 1);
  };
  listen({ call_id: root.dataset.liveCall, since: root.dataset.since }, { call: update });
}

// --- campaign settings: sent as JSON, the API's errors beside their fields ---------------------

function settingValue(element) {
  const raw = element.type === "checkbox" ? element.checked : element.value.trim();
  if (raw === "" ) return element.hasAttribute("data-nullable") ? null : undefined;
  switch (element.dataset.type) {
    case "json": return JSON.parse(raw);
    case "list": return raw.split(",").map((value) => value.trim()).filter(Boolean);
    case "int": return Number.parseInt(raw, 10);
    case "float": return Number.parseFloat(raw);
    case "bool": return raw === "true";
    default: return raw;
  }
}

/** A settings form's values as the API's JSON body (`data-top` fields at the top, the others
 * under `settings`); null, with the error shown, if a JSON field does not parse. */
export function formBody(form) {
  for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
  form.querySelector("[data-form-error]").hidden = true;
  const body = { settings: {} };
  for (const element of form.querySelectorAll("[data-setting]")) {
    let value;
    try {
      value = settingValue(element);
    } catch {
      form.querySelector(`[data-error-for="${element.dataset.setting}"]`).textContent = "not valid JSON";
      return null;
    }
    if (value === undefined) continue;
    if (element.hasAttribute("data-top")) body[element.dataset.setting] = value;
    else body.settings[element.dataset.setting] = value;
  }
  if (!Object.keys(body.settings).length) delete body.settings;
  return body;
}

/** POST `body` to the form's `data-action`: the answer, or null with the API's validation
 * errors shown beside the fields they name. */
export async function postForm(form, body) {
  const response = await fetch(form.dataset.action, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.ok) return answer;
  const errors = Array.isArray(answer.detail) ? answer.detail : [{ loc: [], msg: answer.detail ?? response.statusText }];
  const general = [];
  for (const error of errors) {
    const loc = error.loc ?? [];
    const field = loc[1] === "settings" ? loc[2] : loc[1];
    const slot = field && form.querySelector(`[data-error-for="${CSS.escape(String(field))}"]`);
    const message = loc.length > 3 ? `${loc.slice(3).join(".")}: ${error.msg}` : error.msg;
    if (slot) slot.textContent = message;
    else general.push(message);
  }
  const formError = form.querySelector("[data-form-error]");
  formError.textContent = general.join("; ");
  formError.hidden = !general.length;
  return null;
}

function campaignForm(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = formBody(form);
    const answer = body && (await postForm(form, body));
    if (answer) window.location.assign(answer.location);
  });
}

// --- contact upload with progress and the per-row report ---------------------------------------

function csvCell(value) {
  const text = String(value ?? "");
  const safe = /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
  return /[",\n\r]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

function contactUpload(form) {
  const progress = form.querySelector("[data-upload-progress]");
  const result = document.querySelector("[data-upload-result]");
  const summary = result.querySelector("[data-upload-summary]");
  const table = result.querySelector("[data-upload-errors]");
  const download = result.querySelector("[data-upload-errors-csv]");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = form.querySelector("[data-file]").files[0];
    if (!file) return;
    const column = form.querySelector("[data-phone-column]").value.trim();
    const request = new XMLHttpRequest();
    request.open("POST", form.dataset.action + (column ? `?phone_column=${encodeURIComponent(column)}` : ""));
    request.setRequestHeader("Content-Type", "text/csv");
    request.setRequestHeader("X-CSRF-Token", csrfToken);
    progress.hidden = false;
    progress.value = 0;
    request.upload.addEventListener("progress", (e) => { if (e.lengthComputable) progress.value = e.loaded / e.total; });
    request.addEventListener("load", () => {
      progress.value = 1;
      result.hidden = false;
      let answer = {};
      try { answer = JSON.parse(request.responseText); } catch { /* not JSON */ }
      if (request.status !== 200) {
        summary.textContent = typeof answer.detail === "string" ? answer.detail : `Upload failed (HTTP ${request.status})`;
        summary.className = "error";
        table.hidden = download.hidden = true;
        return;
      }
      summary.className = "";
      summary.textContent = `Imported ${answer.imported} contacts; rejected ${answer.rejected} rows` +
        (answer.errors_truncated ? " (the first 1,000 are listed)." : ".");
      table.tBodies[0].replaceChildren(...answer.errors.map((error) => {
        const row = document.createElement("tr");
        for (const value of [error.row, error.phone ?? "", error.reason]) {
          const cell = document.createElement("td");
          cell.textContent = value;
          row.append(cell);
        }
        return row;
      }));
      table.hidden = download.hidden = answer.errors.length === 0;
      const lines = [["line", "phone", "reason"], ...answer.errors.map((e) => [e.row, e.phone, e.reason])];
      download.href = URL.createObjectURL(new Blob([lines.map((l) => l.map(csvCell).join(",")).join("\r\n")], { type: "text/csv" }));
    });
    request.send(file);
  });
}

// --- confirmations ---------------------------------------------------------------------------------

for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}

const liveCalls = document.querySelector("[data-live-calls]");
if (liveCalls) overview(liveCalls);
const liveCall = document.querySelector("[data-live-call]");
if (liveCall) callPage(liveCall);
for (const form of document.querySelectorAll("[data-campaign-form]")) campaignForm(form);
for (const form of document.querySelectorAll("[data-contact-upload]")) contactUpload(form);
