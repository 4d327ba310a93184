"""The feature contract: names and shapes, vocabularies, encoded tables and query contexts."""
