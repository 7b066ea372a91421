"""ingest-anonymizer: personal data out of producers' events before anything else sees them."""
