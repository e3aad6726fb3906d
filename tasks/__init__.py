"""The work of every stage, as plain functions that import and test without a Prefect server."""
