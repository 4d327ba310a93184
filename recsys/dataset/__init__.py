"""The canonical dataset: schema, Parquet reading and writing, validation, evaluation splits."""
