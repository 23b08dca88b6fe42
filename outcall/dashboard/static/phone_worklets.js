// The test phone's audio, on the audio thread. Two processors:
// - "phone-capture": the microphone at the context's own rate → a 3.4 kHz low-pass → 8 kHz →
//   μ-law, posted as 20 ms frames (160 bytes) to the page, which sends each one as Twilio would.
//   It runs with or without input, so the line carries silence like a phone line does.
// - "phone-playback": the bot's 8 kHz audio → a small, adaptive jitter buffer → the context's rate. It
//   reports what it plays, echoes each mark once the audio before it has played, and on `clear`
//   drops everything unplayed at once and returns the pending marks, as Twilio does.

import { encode } from "./g711.js";

const LINE_RATE = 8000;
const FRAME = 160; // 20 ms at 8 kHz
const VOICED_RMS = 200 / 32768; // as the Twilio emulator judges the bot's frames
// Audio buffered before playing starts (and after running dry): 40 ms at first, as Pipecat sends
// audio at twice real time, 40 ms a message, so the next one is normally in before this one has
// played. Each underrun (audio arriving within 200 ms of the queue running dry: the line was late,
// not finished) adds 20 ms, up to 120 ms.
const JITTER_START = 320;
const JITTER_MAX = 960;
const UNDERRUN_SECS = 0.2;

/** A second-order Butterworth low-pass section (RBJ cookbook), run sample by sample. */
class Biquad {
  constructor(cutoff, q, rate) {
    const w = (2 * Math.PI * cutoff) / rate;
    const alpha = Math.sin(w) / (2 * q);
    const cos = Math.cos(w);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0;
    this.b1 = (1 - cos) / a0;
    this.b2 = this.b0;
    this.a1 = (-2 * cos) / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
  }

  step(x) {
    const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1 - this.a2 * this.y2;
    this.x2 = this.x1;
    this.x1 = x;
    this.y2 = this.y1;
    this.y1 = y;
    return y;
  }
}

function rms(samples) {
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length);
}

class PhoneCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    // Fourth-order Butterworth at 3.4 kHz: what a phone line passes, and below 8 kHz's Nyquist.
    this.filters = [new Biquad(3400, 0.5412, sampleRate), new Biquad(3400, 1.3066, sampleRate)];
    this.step = sampleRate / LINE_RATE; // input samples per line sample (6 at 48 kHz)
    this.position = 0; // where the next line sample falls, in input samples from `previous`
    this.previous = 0;
    this.frame = new Float32Array(FRAME);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0]?.[0];
    const length = input ? input.length : 128; // no microphone yet: silence, still on time
    for (let i = 0; i < length; i++) {
      let x = input ? input[i] : 0;
      for (const filter of this.filters) x = filter.step(x);
      // Line samples between the previous input sample and this one, linearly interpolated.
      while (this.position <= 1) {
        this.frame[this.filled++] = this.previous + (x - this.previous) * this.position;
        this.position += this.step;
        if (this.filled === FRAME) {
          const voiced = rms(this.frame) > VOICED_RMS;
          const ulaw = encode(this.frame);
          this.port.postMessage({ ulaw, voiced }, [ulaw.buffer]);
          this.filled = 0;
        }
      }
      this.position -= 1;
      this.previous = x;
    }
    return true;
  }
}

class PhonePlayback extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunks = []; // queued Float32Arrays of 8 kHz audio
    this.offset = 0; // read position inside chunks[0]
    this.queued = 0; // line samples ever queued
    this.played = 0; // line samples ever played (or dropped by a clear)
    this.marks = []; // [{ name, at }]: echo once `played` reaches `at`
    this.frames = []; // [{ at, voiced }]: each queued 20 ms frame, reported when it starts playing
    this.playing = false;
    this.waitingSince = null; // context time the first unplayed sample arrived while not playing
    this.jitter = JITTER_START;
    this.dryAt = null; // context time the queue last ran dry
    this.step = LINE_RATE / sampleRate; // line samples per output sample
    this.phase = 0;
    this.current = 0;
    this.next = 0;
    this.port.onmessage = ({ data }) => this.receive(data);
  }

  receive(message) {
    if (message.type === "audio") {
      if (this.dryAt !== null && currentTime - this.dryAt < UNDERRUN_SECS) {
        this.jitter = Math.min(this.jitter + FRAME, JITTER_MAX);
        this.port.postMessage({ type: "underrun", jitter: this.jitter });
      }
      this.dryAt = null;
      const samples = message.samples;
      for (let i = 0; i < samples.length; i += FRAME) {
        this.frames.push({ at: this.queued + i, voiced: rms(samples.subarray(i, i + FRAME)) > VOICED_RMS });
      }
      this.chunks.push(samples);
      this.queued += samples.length;
    } else if (message.type === "mark") {
      this.marks.push({ name: message.name, at: this.queued });
      this.echoPlayedMarks();
    } else if (message.type === "clear") {
      const dropped = this.queued - this.played;
      this.chunks = [];
      this.offset = 0;
      this.played = this.queued;
      this.playing = false;
      this.waitingSince = null;
      this.dryAt = null;
      const marks = this.marks.map((mark) => mark.name);
      this.marks = [];
      this.frames = [];
      this.port.postMessage({ type: "cleared", dropped, marks });
    }
  }

  echoPlayedMarks() {
    while (this.marks.length && this.marks[0].at <= this.played) {
      this.port.postMessage({ type: "mark", name: this.marks.shift().name });
    }
  }

  /** The next line sample, or null when the queue is empty. */
  take() {
    while (this.chunks.length && this.offset >= this.chunks[0].length) {
      this.chunks.shift();
      this.offset = 0;
    }
    if (!this.chunks.length) return null;
    if (this.frames.length && this.frames[0].at === this.played) {
      const { voiced } = this.frames.shift();
      this.port.postMessage({ type: "played", voiced, queued: this.queued - this.played });
    }
    this.played++;
    return this.chunks[0][this.offset++];
  }

  process(_, outputs) {
    const output = outputs[0][0];
    const waiting = this.queued - this.played;
    if (!this.playing && waiting > 0) {
      this.waitingSince ??= currentTime;
      // Play once the jitter buffer is full, or once audio has waited as long as filling it takes.
      this.playing = waiting >= this.jitter || currentTime - this.waitingSince >= this.jitter / LINE_RATE;
      if (this.playing) this.waitingSince = null;
    }
    for (let i = 0; i < output.length; i++) {
      if (!this.playing) {
        output[i] = 0;
        continue;
      }
      this.phase += this.step;
      while (this.phase >= 1) {
        const sample = this.take();
        if (sample === null) {
          this.playing = false;
          this.dryAt = currentTime;
          this.port.postMessage({ type: "dry" });
          break;
        }
        this.phase -= 1;
        this.current = this.next;
        this.next = sample;
      }
      output[i] = this.playing ? this.current + (this.next - this.current) * this.phase : 0;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(output);
    this.echoPlayedMarks();
    return true;
  }
}

registerProcessor("phone-capture", PhoneCapture);
registerProcessor("phone-playback", PhonePlayback);
