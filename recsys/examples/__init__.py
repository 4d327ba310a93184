"""Training examples: next-watch examples built per user partition, and their tf.data pipeline."""
