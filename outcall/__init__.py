"""outcall: outbound AI phone calls with Twilio and Pipecat.

The top-level `server.py`, `server_utils.py` and `bot.py` hold the call flow; this package holds
the domain, a module per concept (see the README's map), and never imports those scripts.
"""
