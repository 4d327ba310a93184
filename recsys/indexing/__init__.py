"""An artifact's served index maintained: rebuild, tune, add and remove videos as new versions."""
