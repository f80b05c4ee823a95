// The try-it player: a streamed spoken reply (an open-ended PCM16 WAV) heard while it still streams in.
// Chromium's <audio> and MediaSource cannot play a WAV that is still arriving, so each piece of PCM is
// scheduled on Web Audio the moment it lands, back to back; the whole reply is kept for replaying.
"use strict";

// Reads the WAV header (RIFF, its "fmt " chunk, the start of "data") from the first bytes of a stream.
function parseWavHeader(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at) => String.fromCharCode(...bytes.subarray(at, at + 4));
  if (bytes.length < 12) return null;
  if (tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("the reply is not a WAV stream");
  let at = 12;
  let format = null;
  while (at + 8 <= bytes.length) {
    const size = view.getUint32(at + 4, true);
    if (tag(at) === "data") {
      if (!format) throw new Error("the WAV stream has no format");
      return { ...format, dataStart: at + 8 };
    }
    if (tag(at) === "fmt ") {
      if (at + 8 + 16 > bytes.length) return null;
      format = { channels: view.getUint16(at + 10, true), rate: view.getUint32(at + 12, true),
                 bits: view.getUint16(at + 22, true) };
      if (format.bits !== 16) throw new Error(`the reply is ${format.bits}-bit audio, not 16-bit`);
    }
    at += 8 + size + (size % 2);
  }
  return null;  // more header to come
}

function concatBytes(parts, length) {
  const whole = new Uint8Array(length);
  let at = 0;
  for (const part of parts) { whole.set(part, at); at += part.length; }
  return whole;
}

// A finished reply as a WAV file with its true sizes, for the <audio> element's replay.
function wholeWav(format, pcm) {
  const header = new DataView(new ArrayBuffer(44));
  const text = (at, value) => { for (let i = 0; i < 4; i++) header.setUint8(at + i, value.charCodeAt(i)); };
  const block = format.channels * 2;
  text(0, "RIFF"); header.setUint32(4, 36 + pcm.length, true); text(8, "WAVE"); text(12, "fmt ");
  header.setUint32(16, 16, true); header.setUint16(20, 1, true); header.setUint16(22, format.channels, true);
  header.setUint32(24, format.rate, true); header.setUint32(28, format.rate * block, true);
  header.setUint16(32, block, true); header.setUint16(34, 16, true); text(36, "data");
  header.setUint32(40, pcm.length, true);
  return new Blob([header, pcm], { type: "audio/wav" });
}

class StreamedReplyPlayer {
  // Make one per reply inside the click that asks for it: browsers let audio start from a user's gesture.
  constructor() {
    this.context = new AudioContext();
    this.sources = [];
    this.pieces = [];       // {at, seconds}: when each piece plays, in context time
    this.endsAt = 0;        // context time the last scheduled piece ends
  }

  // Plays ``response``'s body as it arrives; resolves to the whole reply as a WAV Blob once it has all come.
  // ``onFirstSound`` is called when the first piece is scheduled.
  async play(response, onFirstSound) {
    const reader = response.body.getReader();
    let head = new Uint8Array(0);
    let format = null;
    let carry = new Uint8Array(0);  // an odd byte (or partial frame) waiting for the rest of its sample
    const pcmParts = [];
    let pcmLength = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      let bytes = value;
      if (!format) {
        head = concatBytes([head, bytes], head.length + bytes.length);
        format = parseWavHeader(head);
        if (!format) continue;
        bytes = head.subarray(format.dataStart);
      }
      const joined = concatBytes([carry, bytes], carry.length + bytes.length);
      const usable = joined.length - (joined.length % (2 * format.channels));
      carry = joined.slice(usable);
      if (usable === 0) continue;
      const pcm = joined.slice(0, usable);
      pcmParts.push(pcm);
      pcmLength += pcm.length;
      if (this.schedule(pcm, format) && onFirstSound) { onFirstSound(); onFirstSound = null; }
    }
    if (!format) throw new Error("the reply ended before its audio began");
    return wholeWav(format, concatBytes(pcmParts, pcmLength));
  }

  // Queues one piece right after the previous one; true for the first piece.
  schedule(pcm, format) {
    const frames = pcm.length / 2 / format.channels;
    const samples = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2);
    const buffer = this.context.createBuffer(format.channels, frames, format.rate);
    for (let ch = 0; ch < format.channels; ch++) {
      const out = buffer.getChannelData(ch);
      for (let i = 0; i < frames; i++) out[i] = samples[i * format.channels + ch] / 32768;
    }
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const first = this.pieces.length === 0;
    // A short lead the first time, and again after a gap, so a piece is never cut into by the clock.
    const at = Math.max(this.endsAt, this.context.currentTime + 0.05);
    source.start(at);
    this.pieces.push({ at, seconds: buffer.duration });
    this.endsAt = at + buffer.duration;
    this.sources.push(source);
    return first;
  }

  // Seconds of the reply heard so far (the silence while waiting for the next piece not counted).
  heardSeconds() {
    const now = this.context.currentTime;
    let heard = 0;
    for (const { at, seconds } of this.pieces) heard += Math.min(Math.max(now - at, 0), seconds);
    return heard;
  }

  // Resolves once everything scheduled so far has been heard (at once when stopped or never allowed to sound).
  async finished() {
    while (this.context.state === "running" && this.context.currentTime < this.endsAt) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(250, (this.endsAt - this.context.currentTime) * 1000 + 20)));
    }
  }

  stop() {
    for (const source of this.sources) { try { source.stop(); } catch (_) { /* never started */ } }
    this.context.close();
  }
}
