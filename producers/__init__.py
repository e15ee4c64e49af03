"""producers role of shopstream."""
