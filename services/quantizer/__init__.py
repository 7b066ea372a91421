"""quantizer: compresses each trained model version (int8, fp16, pruning), proves the accuracy cost on the
version's held-out records, and publishes the chosen form as a signed artifact."""
