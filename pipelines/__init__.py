"""pipelines role of shopstream."""
