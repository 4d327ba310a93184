"""A model version on disk: its file layout, manifest, checksums, and the stored user profiles."""
