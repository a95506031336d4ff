"""Offline training, data and export of EmberVLM."""
