"""Bulwark's shared library: settings, events and the Kafka bus, tracing, Redis, crypto, gRPC helpers.

Services under `services/` wire this library to their own handlers; this package never imports a service.
"""

__version__ = "0.1.0"
