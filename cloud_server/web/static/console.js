// The console's behaviour: live status, character and emotion forms, voice uploads and recordings, and
// the try-it player, over the JSON API.
// It authenticates with the HttpOnly session cookie (sent by the browser) and the CSRF token from
// the page's <meta>; it never sees or stores the API key.
"use strict";

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

// A call to the JSON API as the signed-in page; ``body`` is an object (sent as JSON) or FormData (multipart).
async function api(method, url, body) {
  const form = body instanceof FormData;
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: form ? { "X-CSRF-Token": csrfToken() } : { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: body === undefined || form ? body : JSON.stringify(body),
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// htmx (vendored) refreshes the status panel and sends the delete buttons' requests, the CSRF token in
// the header <body hx-headers> names; this reloads the page after a change, or says why it failed.
function afterHtmxRequests() {
  let latestCall = document.getElementById("calls")?.dataset.latest;
  document.body.addEventListener("htmx:afterSwap", () => {  // the status panel: announce a new call, once
    const calls = document.getElementById("calls");
    if (!calls || calls.dataset.latest === latestCall) return;
    latestCall = calls.dataset.latest;
    document.getElementById("status-news").textContent = calls.dataset.news;
  });
  document.body.addEventListener("htmx:afterRequest", async (event) => {
    const { elt, successful, xhr, requestConfig } = event.detail;
    if (requestConfig.verb === "get") return;  // the status panel: htmx swaps it in, or follows HX-Redirect
    if (successful) { window.location.reload(); return; }
    let message = xhr.status ? `${xhr.status} ${xhr.statusText}` : "the server did not answer";
    try { message = JSON.parse(xhr.responseText).error.message; } catch (_) { /* not JSON */ }
    const where = document.getElementById(elt.dataset.message);
    if (where) where.textContent = `Not done: ${message}`;
  });
}

function characterForms() {
  const message = document.getElementById("form-message");
  const say = (text) => { if (message) message.textContent = text; };
  for (const form of document.querySelectorAll("form.character-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {};
      for (const element of form.elements) {
        if (!element.name) continue;
        if (element.type === "number") body[element.name] = Number(element.value);
        else if (element.name === "voice") body.voice = element.value || null;
        else if (element.name === "voices") body.voices = element.value ? [element.value] : [];
        else body[element.name] = element.value;
      }
      try {
        await api(form.dataset.method, form.dataset.url, body);
        window.location.reload();
      } catch (err) { say(`Not saved: ${err.message}`); }
    });
  }
  for (const button of document.querySelectorAll("button.hear-emotion")) {
    button.addEventListener("click", async () => {
      const player = document.getElementById(button.dataset.player);
      button.disabled = true;
      say("Speaking…");
      try {
        const wav = await (await api("POST", button.dataset.url, {})).arrayBuffer();
        playWav(player, wav);
        say("");
      } catch (err) { say(`Could not speak: ${err.message}`); } finally { button.disabled = false; }
    });
  }
}

async function playWav(audio, wav) {
  const previous = audio.src;
  audio.src = URL.createObjectURL(new Blob([wav], { type: "audio/wav" }));
  if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
  return audio.play().then(() => true, () => false);
}

// A recording (webm/opus from MediaRecorder) decoded by the browser and written as 16-bit mono WAV,
// a format the server takes from any browser.
async function toWav(blob) {
  const context = new AudioContext();
  try {
    const decoded = await context.decodeAudioData(await blob.arrayBuffer());
    const samples = decoded.getChannelData(0);
    const rate = decoded.sampleRate;
    const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
    const text = (offset, value) => { for (let i = 0; i < value.length; i++) view.setUint8(offset + i, value.charCodeAt(i)); };
    text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVEfmt ");
    view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
    view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
    view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples.length * 2, true);
    samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
    return new Blob([view], { type: "audio/wav" });
  } finally { await context.close(); }
}

// Starts recording from the microphone; ``stop()`` ends it and resolves to the clip as WAV.
async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const parts = [];
  const recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => parts.push(event.data));
  const stopped = new Promise((resolve) => recorder.addEventListener("stop", resolve));
  recorder.start();
  return {
    async stop() {
      recorder.stop();
      await stopped;
      stream.getTracks().forEach((track) => track.stop());
      return toWav(new Blob(parts, { type: parts[0]?.type || "audio/webm" }));
    },
  };
}

function voicesTab() {
  const form = document.getElementById("voice-upload");
  if (!form) return;
  const message = document.getElementById("voice-message");
  const chosen = document.getElementById("drop-chosen");
  const zone = document.getElementById("drop-zone");
  const input = document.getElementById("voice-file");
  const recordButton = document.getElementById("record-button");
  const recorded = document.getElementById("recorded-audio");
  let pending = null;  // the file or recording to upload
  const choose = (blob, name) => {
    pending = blob;
    chosen.textContent = `Ready to upload: ${name}`;
    const id = document.getElementById("voice-id");
    if (!id.value) id.value = name.toLowerCase().replace(/\.[a-z0-9]+$/, "").replace(/[^a-z0-9_-]+/g, "-").replace(/^-+/, "").slice(0, 64);
  };
  input.addEventListener("change", () => { if (input.files[0]) choose(input.files[0], input.files[0].name); });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) choose(file, file.name);
  });
  let recording = null;
  const pressed = (on) => {
    recordButton.textContent = on ? "Stop recording" : "Record in the browser";
    recordButton.setAttribute("aria-pressed", String(on));
  };
  recordButton.addEventListener("click", async () => {
    try {
      if (recording) {
        const wav = await recording.stop();
        recording = null;
        pressed(false);
        recorded.hidden = false;
        recorded.src = URL.createObjectURL(wav);
        choose(wav, "recording.wav");
        return;
      }
      recording = await startRecording();
      pressed(true);
      message.textContent = "Recording: speak for a few seconds, then stop.";
    } catch (err) { recording = null; pressed(false); message.textContent = `Cannot record: ${err.message}`; }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!pending) { message.textContent = "Choose, drop or record a clip first."; return; }
    const data = new FormData();
    data.append("id", form.elements.id.value);
    data.append("audio", pending, "clip");
    message.textContent = "Uploading and preparing the voice…";
    try {
      await api("POST", "/voices", data);
      window.location.reload();
    } catch (err) { message.textContent = `Not uploaded: ${err.message}`; }
  });
}

document.addEventListener("DOMContentLoaded", () => { afterHtmxRequests(); characterForms(); voicesTab(); });
