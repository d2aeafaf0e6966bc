"""MLflow tracking: naming conventions, logger construction and run helpers."""
