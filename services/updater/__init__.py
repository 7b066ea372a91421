"""updater: deploys validated versions into Triton, rolls them out (shadow, canary, full) against live
signals, rolls back on regression, and keeps Triton's loaded versions in order."""
