"""The two-tower model: towers, the item-frequency estimate, the retrieval model, signatures."""
