"""Command-line entry points (ember-train, ember-data)."""
