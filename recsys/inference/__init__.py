"""Serving-time inference: the query tower, served catalog, retrieval and the Recommender."""
