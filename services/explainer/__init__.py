"""explainer: per-feature (or per-token) attributions for predictions, over gRPC and from a sample of
inference.log."""
