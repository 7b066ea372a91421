"""inference: Bulwark's gRPC front door to NVIDIA Triton, with guard checks, Redis caching and a sampled
inference log."""
