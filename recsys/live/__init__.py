"""Live state beside an immutable artifact: what changes between exports and is served at once.

Users' recent events (the profile store) and videos added or removed since the export. It
keeps raw ids and times, never vocabulary ids, so it outlives model versions; acknowledged
means durable.
"""
