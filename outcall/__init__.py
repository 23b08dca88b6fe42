"""outcall: outbound AI phone calls with Twilio and Pipecat.

The top-level `server.py`, `server_utils.py` and `bot.py` hold the call flow; this package
holds the pieces they share: settings, call configuration, prompt templates and stream tokens.
"""
