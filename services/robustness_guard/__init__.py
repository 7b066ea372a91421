"""robustness-guard: a gate before deployment (attacks, noise, calibration) and drift watching after it.
The online half (checks on every request) is the library `bulwark.guard.online`, run by the front door."""
