"""G.711 μ-law helpers and test tones, without the deprecated audioop module."""

import numpy as np

_BIAS = 0x84
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law: one Twilio media message
ULAW_SILENCE = b"\xff" * FRAME_BYTES


def _decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign, -magnitude, magnitude).astype(np.int16)


_ULAW_TO_PCM = _decode_table()


def ulaw_to_pcm(data: bytes) -> np.ndarray:
    return _ULAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)]


def pcm_to_ulaw(pcm: np.ndarray) -> bytes:
    """G.711 μ-law encoding of 16-bit samples (the inverse of `ulaw_to_pcm`)."""
    samples = pcm.astype(np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), 32635) + _BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


def tone_pcm16(seconds: float, sample_rate: int, frequency: float = 440.0) -> bytes:
    """A steady tone as little-endian 16-bit PCM: stands in for synthesised speech."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (np.sin(2 * np.pi * frequency * t) * 8000).astype("<i2").tobytes()


def frames(ulaw: bytes) -> list[bytes]:
    """Split μ-law audio into 20 ms frames, padding the last with silence."""
    chunks = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
    if chunks and len(chunks[-1]) < FRAME_BYTES:
        chunks[-1] += b"\xff" * (FRAME_BYTES - len(chunks[-1]))
    return chunks
