"""Protocol-faithful fakes of Twilio, Deepgram, Gemini and Cartesia, served on 127.0.0.1.

The real SDKs and Pipecat services talk to them exactly as they would to the vendors.
"""
