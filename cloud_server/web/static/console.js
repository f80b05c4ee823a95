// The console's behaviour: live status, character forms and the try-it player, over the JSON API.
// It authenticates with the HttpOnly session cookie (sent by the browser) and the CSRF token from
// the page's <meta>; it never sees or stores the API key.
"use strict";

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function refreshStatus() {
  const panel = document.getElementById("status-panel");
  if (!panel) return;
  setInterval(async () => {
    try {
      const response = await fetch(panel.dataset.refresh, { credentials: "same-origin" });
      if (response.status === 401) { window.location.assign("/"); return; }
      if (response.ok) panel.innerHTML = await response.text();
    } catch (_) { /* the server restarting: try again next time */ }
  }, 3000);
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
        else body[element.name] = element.value;
      }
      try {
        await api(form.dataset.method, form.dataset.url, body);
        window.location.reload();
      } catch (err) { say(`Not saved: ${err.message}`); }
    });
  }
  for (const button of document.querySelectorAll("button.delete-character")) {
    button.addEventListener("click", async () => {
      try {
        await api("DELETE", button.dataset.url);
        window.location.reload();
      } catch (err) { say(`Not deleted: ${err.message}`); }
    });
  }
}

function tryIt() {
  const form = document.getElementById("try-form");
  if (!form) return;
  const audio = document.getElementById("reply-audio");
  const status = document.getElementById("try-status");
  const replyText = document.getElementById("try-reply");
  const sessionId = `console-${Math.random().toString(36).slice(2, 12)}`;
  audio.addEventListener("ended", () => { status.textContent = "Played. Say something else, or press play again."; });
  audio.addEventListener("error", () => { status.textContent = "The browser could not play the reply."; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("try-speak");
    button.disabled = true;
    status.textContent = "Thinking and speaking…";
    replyText.textContent = "";
    try {
      const response = await api("POST", "/process-text", {
        text: form.elements.text.value, character: form.elements.character.value, session_id: sessionId,
      });
      const wav = await response.arrayBuffer();  // the whole reply; Chromium plays its open-ended WAV header
      const previous = audio.src;
      audio.src = URL.createObjectURL(new Blob([wav], { type: "audio/wav" }));
      if (previous) URL.revokeObjectURL(previous);
      status.textContent = "Playing the reply.";
      await audio.play().catch(() => { status.textContent = "Reply ready: press play."; });
      const session = await (await api("GET", `/sessions/${sessionId}`)).json();
      replyText.textContent = session.last_reply ? `Reply: ${session.last_reply}` : "";
    } catch (err) {
      status.textContent = `No reply: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => { refreshStatus(); characterForms(); tryIt(); });
