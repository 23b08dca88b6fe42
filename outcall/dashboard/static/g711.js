// G.711 μ-law, as Twilio's Media Streams carry audio: 8 kHz, one byte a sample. Shared by the test
// phone's page and its audio worklets; the browser test checks it against the Python codec.

const BIAS = 0x84;
const CLIP = 32635;

/** One 16-bit sample (an integer in −32768…32767) as a μ-law byte. */
export function encodeSample(sample) {
  const sign = sample < 0 ? 0x80 : 0;
  const magnitude = Math.min(Math.abs(sample), CLIP) + BIAS;
  const exponent = 31 - Math.clz32(magnitude) - 7;  // floor(log2(magnitude)) − 7, 0…7
  const mantissa = (magnitude >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

/** A μ-law byte as a 16-bit sample. */
export function decodeSample(byte) {
  const code = ~byte & 0xff;
  const exponent = (code >> 4) & 0x07;
  const magnitude = ((((code & 0x0f) << 3) + BIAS) << exponent) - BIAS;
  return code & 0x80 ? -magnitude : magnitude;
}

const DECODED = Float32Array.from({ length: 256 }, (_, byte) => decodeSample(byte) / 32768);

/** Float samples (−1…1) as μ-law bytes. */
export function encode(samples) {
  const out = new Uint8Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    out[i] = encodeSample(Math.round(Math.max(-1, Math.min(1, samples[i])) * 32767));
  }
  return out;
}

/** μ-law bytes as float samples (−1…1). */
export function decode(bytes) {
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = DECODED[bytes[i]];
  return out;
}
