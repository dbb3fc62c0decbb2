"""Secrets, signing keys, tokens and roles shared by the API, the guard proxy and clients."""
