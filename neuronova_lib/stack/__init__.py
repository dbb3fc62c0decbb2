"""Bringing the platform up as local processes: configs, supervision, health."""
