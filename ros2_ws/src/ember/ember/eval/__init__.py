"""Evaluation of Ember models: metrics, bag evaluation (offline and live), robot selection, reports."""
