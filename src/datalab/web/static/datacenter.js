// Data Center's live parts: uploads and operators' exports (straight to the presigned POST form, with
// progress), following an upload's status, and value rows that follow the chosen column on the mapping page.
"use strict";

// Ask the page's server for a presigned POST form (`fields` names what it sends besides the token and
// the file name), then post the file straight to the store with progress; `next` opens once it is in.
function presignedUpload(form, fields, progress, message, labels) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.elements.file.files[0];
    if (!file) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    message.textContent = `Preparing the ${labels.noun}…`;
    const body = new URLSearchParams({ csrf_token: form.elements.csrf_token.value, fileName: file.name });
    for (const name of fields) body.append(name, form.elements[name].value);
    let created;
    try {
      const response = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
      created = await response.json();
      if (!response.ok) throw new Error(created.message || response.statusText);
    } catch (error) {
      message.textContent = `The ${labels.noun} could not start: ` + error.message;
      button.disabled = false;
      return;
    }
    const data = new FormData();
    for (const [name, value] of Object.entries(created.fields)) data.append(name, value);
    data.append("file", file);
    const request = new XMLHttpRequest();
    request.open("POST", created.url);
    progress.hidden = false;
    request.upload.addEventListener("progress", (step) => {
      if (step.lengthComputable) {
        progress.value = Math.round((100 * step.loaded) / step.total);
        message.textContent = `Uploading ${file.name}: ${progress.value}%`;
      }
    });
    request.addEventListener("load", () => {
      if (request.status >= 200 && request.status < 300) {
        message.textContent = labels.done;
        window.location.assign(created.next);
      } else {
        const text = request.responseXML && request.responseXML.querySelector("Message");
        message.textContent = "The store refused the file: " + (text ? text.textContent : request.status);
        button.disabled = false;
      }
    });
    request.addEventListener("error", () => {
      message.textContent = "The connection broke off; please try again.";
      button.disabled = false;
    });
    request.send(data);
  });
}

function setupUpload() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  presignedUpload(
    form,
    ["productType", "fileDescription"],
    document.getElementById("upload-progress"),
    document.getElementById("upload-message"),
    { noun: "upload", done: "Uploaded. Opening the file's page…" },
  );
}

function setupExportPublish() {
  const form = document.getElementById("export-form");
  if (!form) return;
  presignedUpload(
    form,
    ["productKey", "orderName"],
    document.getElementById("export-progress"),
    document.getElementById("export-message"),
    { noun: "export", done: "Published. Opening the export's page…" },
  );
}

function followStatus() {
  const panel = document.getElementById("upload-status");
  if (!panel || !panel.dataset.statusUrl) return;
  const known = panel.dataset.status;
  const poll = async () => {
    try {
      const response = await fetch(panel.dataset.statusUrl, { credentials: "same-origin" });
      if (response.ok) {
        const state = await response.json();
        if (state.status !== known) {
          window.location.reload();
          return;
        }
      }
    } catch (error) {
      // The server may be restarting: keep looking.
    }
    window.setTimeout(poll, 1000);
  };
  window.setTimeout(poll, 1000);
}

function setupMapping() {
  const form = document.getElementById("mapping-form");
  if (!form) return;
  const samples = JSON.parse(form.dataset.samples || "{}");
  form.querySelectorAll("select[data-field]").forEach((select) => {
    const fieldset = form.querySelector(`fieldset[data-values-for="${select.dataset.field}"]`);
    if (!fieldset) return;
    select.addEventListener("change", () => {
      const field = select.dataset.field;
      const rows = fieldset.querySelector(".value-rows");
      const legend = fieldset.querySelector("legend");
      legend.textContent = select.value ? `${field} ← ${select.value}` : field;
      fieldset.hidden = !select.value;
      rows.replaceChildren();
      (samples[select.value] || []).forEach((value, index) => {
        const row = document.createElement("div");
        row.className = "value-row";
        const source = Object.assign(document.createElement("input"), { type: "hidden", name: `source:${field}:${index}`, value });
        const input = Object.assign(document.createElement("input"), { type: "text", name: `value:${field}:${index}`, id: `value-${field}-${index}`, maxLength: 50 });
        const label = Object.assign(document.createElement("label"), { htmlFor: input.id, textContent: `${value} →` });
        row.append(source, label, input);
        rows.append(row);
      });
      if (!select.value) {
        const hint = Object.assign(document.createElement("p"), { className: "hint", textContent: `Map a column to ${field} to set its values.` });
        rows.append(hint);
      }
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupUpload();
  setupExportPublish();
  followStatus();
  setupMapping();
});
