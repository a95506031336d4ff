"""ember-serve: the REST API around the engine (FastAPI + uvicorn)."""
