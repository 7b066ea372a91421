"""The operator console: one web page over what the doctor, the updater, the guard and the explainer know."""
