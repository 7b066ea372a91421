"""The `bulwark` command."""
