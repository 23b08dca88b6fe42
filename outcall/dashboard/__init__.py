"""The operator console: server-rendered pages over the same stores and API functions the JSON
API uses, signed-in with a session cookie, kept live by Server-Sent Events fed from the database.

`sessions.py` signs operators in and checks every change against cross-site requests;
`feed.py` turns changes to call records into events for every open page, whichever instance or
worker wrote them; `pages.py` is the router; `templates/` and `static/` are what the browser gets.
"""
