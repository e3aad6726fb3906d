"""Data source adapters: each reads one public collection format into SourceRecords."""
