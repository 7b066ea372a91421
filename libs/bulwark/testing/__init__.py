"""Helpers for Bulwark's own tests and for teams testing services built on it (real parts, no mocks)."""
