"""Candidate indexes for retrieval: exact numpy search and ScaNN, one interface, safe files.

Modules: `base` (the `Index` interface, `IndexConfig`, `SearchResult`, `IndexLoadError`),
`top_k` (the exact top-k every ranking uses), `recall` (recall@k), `exact` and `scann_index`
(the implementations), `registry` (build or load by kind), `tuning` (ScaNN's search
parameters for a recall target). Import names from those modules; this package re-exports
nothing. Importing it does not import ScaNN or TensorFlow; building or loading a ScaNN index
does.
"""
