"""dashboard role of shopstream."""
