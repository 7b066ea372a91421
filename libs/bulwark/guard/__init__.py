"""The robustness guard's library: attacks, the adversarial detector, drift statistics, and the online
checks the inference front door runs on every request (a library call, no network hop)."""
