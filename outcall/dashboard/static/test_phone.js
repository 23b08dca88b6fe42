// The test phone: the browser plays Twilio's side of a media stream against the server's own /ws.
// The server creates the call (POST /console/test-calls) and answers with what Twilio would send
// in `start`; from then on this page is the phone line: `connected`, `start`, a `media` frame
// every 20 ms (silence included), `mark` echoed once played, `clear` honoured at once, `dtmf`
// from the keypad, `stop` on hang-up or when the tab closes.
//
// Playwright mutes audio, so the page keeps counters (window.testPhone.counters) that tests and
// the benchmark read; the same figures are shown on the page.

import { formBody, listen, postForm, turnElement } from "./console.js";
import { decode } from "./g711.js";

const QUIET_BEFORE_REPLY_MS = 100; // the callee's last voiced frame this long ago: a reply, not a barge-in

class TestPhone {
  constructor(root) {
    this.root = root;
    this.onended = null; // called once the line has closed, whoever closed it
    this.reset();
    root.querySelector("[data-hang-up]").addEventListener("click", () => this.hangUp());
    for (const key of root.querySelectorAll("[data-key]")) {
      key.addEventListener("click", () => this.press(key.dataset.key));
    }
    window.addEventListener("pagehide", () => this.hangUp());
  }

  /** A new line: nothing sent, received or played yet. */
  reset() {
    this.socket = null;
    this.context = null;
    this.sequence = 0;
    this.chunk = 0;
    this.start = null;
    this.counters = {
      state: "idle", framesSent: 0, voicedFramesSent: 0, framesReceived: 0, framesPlayed: 0, voicedFramesPlayed: 0,
      clearsHonoured: 0, droppedByClear: 0, marksEchoed: 0, underruns: 0, queuedSamples: 0, digitsSent: 0,
      socketOpenedAt: null, firstVoicePlayedMs: null, responseMs: [], outputLatencyMs: null, closeCode: null, jitterMs: 40,
    };
    this.lastVoicedSentAt = null; // performance.now() of the callee's last voiced frame
    this.awaitingReply = false;
  }

  show() {
    const c = this.counters;
    this.root.dataset.state = c.state;
    this.root.querySelector("[data-field=phone-state]").textContent = c.state;
    this.root.querySelector("[data-field=first-voice]").textContent = c.firstVoicePlayedMs == null ? "–" : `${c.firstVoicePlayedMs} ms`;
    this.root.querySelector("[data-field=responses]").textContent = c.responseMs.length ? c.responseMs.map((ms) => `${ms} ms`).join(", ") : "–";
    this.root.querySelector("[data-field=line]").textContent =
      `${c.framesSent} frames sent, ${c.framesReceived} received, ${c.framesPlayed} played; ` +
      `${c.clearsHonoured} clears, ${c.marksEchoed} marks, ${c.underruns} underruns`;
    for (const key of this.root.querySelectorAll("[data-key], [data-hang-up]")) key.disabled = c.state !== "connected";
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ sequenceNumber: String(++this.sequence), streamSid: this.start.stream_sid, ...message }));
    }
  }

  /** The microphone and the audio graph, before the call exists: a refused microphone creates no call. */
  async prepare() {
    this.reset();
    this.counters.state = "connecting";
    this.show();
    // The microphone as a phone line would carry it. Chromium's echo cancellation does not cover
    // Web Audio playback (hence "use headphones"), and its noise suppression trims the ends of
    // words: the bot's VAD then heard speech the page had counted as over (measured: +50–75 ms on
    // every reply time, bench/browser_call_bench.py). Gain control only evens out the level.
    this.microphone = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: true, channelCount: 1 },
    });
    this.context = new AudioContext(); // the device's own rate: an 8 kHz context fails in Firefox
    await this.context.audioWorklet.addModule("/console/static/phone_worklets.js");
    this.capture = new AudioWorkletNode(this.context, "phone-capture", { numberOfOutputs: 0 });
    this.playback = new AudioWorkletNode(this.context, "phone-playback", { outputChannelCount: [1] });
    this.context.createMediaStreamSource(this.microphone).connect(this.capture);
    this.playback.connect(this.context.destination);
    this.capture.port.onmessage = ({ data }) => this.captured(data);
    this.playback.port.onmessage = ({ data }) => this.played(data);
    await this.context.resume();
    this.counters.outputLatencyMs = Math.round(((this.context.outputLatency || 0) + this.context.baseLatency) * 1000);
  }

  /** Open the stream the server issued for the call. */
  connect(start) {
    this.start = start;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.socket = new WebSocket(`${scheme}://${location.host}${start.stream_path}`);
    this.socket.onopen = () => this.opened();
    this.socket.onmessage = (message) => this.received(JSON.parse(message.data));
    this.socket.onclose = (event) => this.closed(event.code);
  }

  opened() {
    this.counters.socketOpenedAt = performance.now();
    this.counters.state = "connected";
    this.socket.send(JSON.stringify({ event: "connected", protocol: "Call", version: "1.0.0" }));
    this.send({
      event: "start",
      start: {
        accountSid: this.start.account_sid, streamSid: this.start.stream_sid, callSid: this.start.call_sid,
        tracks: ["inbound"], customParameters: this.start.custom_parameters,
        mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
      },
    });
    this.show();
  }

  captured({ ulaw, voiced }) {
    if (this.counters.state !== "connected") return;
    this.chunk++;
    let binary = "";
    for (const byte of ulaw) binary += String.fromCharCode(byte);
    this.send({
      event: "media",
      media: { track: "inbound", chunk: String(this.chunk), timestamp: String((this.chunk - 1) * 20), payload: btoa(binary) },
    });
    this.counters.framesSent++;
    if (voiced) {
      this.counters.voicedFramesSent++;
      this.lastVoicedSentAt = performance.now();
      this.awaitingReply = true;
    }
  }

  received(message) {
    if (message.event === "media") {
      const bytes = Uint8Array.from(atob(message.media.payload), (c) => c.charCodeAt(0));
      const samples = decode(bytes);
      this.playback.port.postMessage({ type: "audio", samples }, [samples.buffer]);
      this.counters.framesReceived += Math.ceil(bytes.length / 160);
    } else if (message.event === "mark") {
      this.playback.port.postMessage({ type: "mark", name: message.mark.name });
    } else if (message.event === "clear") {
      this.playback.port.postMessage({ type: "clear" });
    }
  }

  played(message) {
    const now = performance.now();
    if (message.type === "played") {
      this.counters.framesPlayed++;
      this.counters.queuedSamples = message.queued;
      if (message.voiced) {
        this.counters.voicedFramesPlayed++;
        this.counters.firstVoicePlayedMs ??= Math.round(now - this.counters.socketOpenedAt);
        if (this.awaitingReply && now - this.lastVoicedSentAt > QUIET_BEFORE_REPLY_MS) {
          this.counters.responseMs.push(Math.round(now - this.lastVoicedSentAt));
          this.awaitingReply = false;
        }
      }
    } else if (message.type === "dry") {
      this.counters.queuedSamples = 0;
    } else if (message.type === "underrun") {
      this.counters.underruns++;
      this.counters.jitterMs = message.jitter / 8;
    } else if (message.type === "mark") {
      this.echoMark(message.name);
    } else if (message.type === "cleared") {
      this.counters.clearsHonoured++;
      this.counters.droppedByClear += message.dropped;
      this.counters.queuedSamples = 0;
      for (const name of message.marks) this.echoMark(name);
    }
    this.show();
  }

  echoMark(name) {
    this.send({ event: "mark", mark: { name } });
    this.counters.marksEchoed++;
  }

  press(digit) {
    this.send({ event: "dtmf", dtmf: { track: "inbound_track", digit } });
    this.counters.digitsSent++;
  }

  hangUp() {
    if (!this.socket || this.counters.state !== "connected") return;
    this.send({ event: "stop", stop: { accountSid: this.start.account_sid, callSid: this.start.call_sid } });
    this.socket.close(1000, "hung up");
    this.closed(1000);
  }

  closed(code) {
    if (this.counters.state === "ended") return;
    this.counters.state = "ended";
    this.counters.closeCode = code;
    this.microphone?.getTracks().forEach((track) => track.stop());
    this.capture?.disconnect();
    const context = this.context;
    setTimeout(() => context?.close(), 2000); // the bot's last words still play out
    this.show();
    this.onended?.();
  }
}

function transcript(root, callId) {
  const list = root.querySelector("[data-field=transcript]");
  list.replaceChildren();
  return listen({ call_id: callId }, {
    call: (call) => {
      list.replaceChildren(...call.transcript.map(turnElement));
      root.querySelector("[data-field=call-status]").textContent = `${call.status}${call.end_reason ? ` (${call.end_reason})` : ""}`;
    },
  });
}

const form = document.querySelector("[data-test-call-form]");
const phoneRoot = document.querySelector("[data-test-phone]");
if (form && phoneRoot) {
  const phone = new TestPhone(phoneRoot);
  window.testPhone = phone;
  phone.show();
  let events = null;
  const submit = form.querySelector("button[type=submit]");
  phone.onended = () => { submit.disabled = false; };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = formBody(form);
    if (!body) return;
    submit.disabled = true;
    try {
      await phone.prepare();
    } catch (error) {
      phone.counters.state = "failed";
      phone.show();
      phoneRoot.querySelector("[data-field=phone-error]").textContent = `No microphone: ${error.message}`;
      submit.disabled = false;
      return;
    }
    const start = await postForm(form, body);
    if (!start) {
      phone.counters.state = "idle";
      phone.show();
      submit.disabled = false;
      return;
    }
    const link = phoneRoot.querySelector("[data-field=call-link]");
    link.href = `/console/calls/${encodeURIComponent(start.call_id)}`;
    link.hidden = false;
    events?.close();
    events = transcript(phoneRoot, start.call_id);
    phone.connect(start);
  });
}
