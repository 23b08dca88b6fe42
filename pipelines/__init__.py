"""Pipeline builders: which speech, LLM and voice services a call uses, and in what order."""
