"""Bulwark's services: one package each, wiring the shared library (`bulwark`) to its own logic."""
