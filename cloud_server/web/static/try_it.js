// The try-it tab: say a line (typed, or spoken into the microphone through /process-audio) and hear the
// character's reply while it streams in (reply_player.js); api(), startRecording() come from console.js.
"use strict";

function tryIt() {
  const form = document.getElementById("try-form");
  if (!form) return;
  const audio = document.getElementById("reply-audio");
  const status = document.getElementById("try-status");
  const replyText = document.getElementById("try-reply");
  const speakButton = document.getElementById("try-speak");
  const talkButton = document.getElementById("try-talk");
  const sessionId = `console-${Math.random().toString(36).slice(2, 12)}`;
  const { character, emotion } = form.elements;
  const showEmotions = () => {  // only the chosen character's emotions can be picked
    for (const option of emotion.options) {
      const mine = !option.dataset.character || option.dataset.character === character.value;
      option.hidden = !mine;
      option.disabled = !mine;
    }
    if (emotion.selectedOptions[0]?.disabled) emotion.value = "";
  };
  character.addEventListener("change", showEmotions);
  showEmotions();

  const knobs = () => {  // this line's own voice settings: only the fields filled in
    const chosen = {};
    for (const name of ["exaggeration", "temperature", "cfg_weight", "max_tokens"]) {
      if (form.elements[name].value !== "") chosen[name] = Number(form.elements[name].value);
    }
    return chosen;
  };

  let player = null;
  const say = (state, text) => { status.dataset.state = state; status.textContent = text; };
  audio.addEventListener("error", () => { if (audio.src) say("failed", "The browser could not play the reply."); });

  // One turn: ``ask()`` sends the request; the reply plays as it arrives, then stays in <audio> to replay.
  const turn = async (ask) => {
    speakButton.disabled = talkButton.disabled = true;
    if (player) player.stop();
    const mine = player = new StreamedReplyPlayer();  // made inside the click: the browser lets it sound
    let ticker = null;
    const showHeard = () => say("playing", `Playing the reply as it arrives: ${mine.heardSeconds().toFixed(1)} s heard.`);
    say("thinking", "Thinking…");
    replyText.textContent = "";
    if (audio.src.startsWith("blob:")) URL.revokeObjectURL(audio.src);
    audio.removeAttribute("src");
    try {
      const response = await ask();
      const heard = response.headers.get("X-Transcript");
      if (heard) replyText.textContent = `You said: ${decodeURIComponent(heard)}`;
      const wav = await mine.play(response, () => { showHeard(); ticker = setInterval(showHeard, 200); });
      audio.src = URL.createObjectURL(wav);
      const session = await (await api("GET", `/sessions/${sessionId}`)).json();
      if (session.last_reply) replyText.textContent = `${heard ? replyText.textContent + " · " : ""}Reply: ${session.last_reply}`;
      await mine.finished();
      if (mine.context.state !== "running") say("ready", "Reply ready: press play.");  // the browser kept it silent
      else say("played", `Played: ${mine.heardSeconds().toFixed(1)} s heard. Press play to hear it again, or say something else.`);
    } catch (err) {
      say("failed", `No reply: ${err.message}`);
    } finally {
      clearInterval(ticker);
      speakButton.disabled = talkButton.disabled = false;
    }
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    turn(() => api("POST", "/process-text", {
      text: form.elements.text.value, character: character.value, session_id: sessionId,
      emotion: emotion.value || undefined, ...knobs(),
    }));
  });

  let recording = null;
  const pressed = (on) => {
    talkButton.textContent = on ? "Stop and send" : "Talk into the microphone";
    talkButton.setAttribute("aria-pressed", String(on));
    speakButton.disabled = on;
  };
  talkButton.addEventListener("click", async () => {
    if (!recording) {
      try {
        recording = await startRecording();
        pressed(true);
        say("recording", "Listening: speak, then press “Stop and send”.");
      } catch (err) { say("failed", `Cannot record: ${err.message}`); }
      return;
    }
    const stopping = recording;
    recording = null;
    pressed(false);
    await turn(async () => {
      const data = new FormData();
      data.append("audio", await stopping.stop(), "said.wav");
      data.append("character", character.value);
      data.append("session_id", sessionId);
      if (emotion.value) data.append("emotion", emotion.value);
      for (const [name, value] of Object.entries(knobs())) data.append(name, String(value));
      return api("POST", "/process-audio", data);
    });
  });
}

document.addEventListener("DOMContentLoaded", tryIt);
