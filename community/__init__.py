"""The reference community platform: ingest workers, storage, signed acks, caregiver alarm acknowledgements."""
