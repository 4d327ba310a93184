"""The profile store a URL names (``recsys serve --profile-store``), and the default's place."""

from __future__ import annotations

from pathlib import Path

from recsys.live.profile_store import Caps, ProfileStore, ProfileStoreError

EMBEDDED = "embedded"  # the URL that names the default store (as --profile-store takes it)
DISABLED = "none"  # no store: profiles are the artifact's alone
PROFILES_FILE = "profiles.sqlite3"


def default_store_path(artifacts: Path, name: str) -> Path:
    """The embedded store's file for model ``name``: ``<artifacts>/<name>/live/``."""
    return Path(artifacts) / name / "live" / PROFILES_FILE


def open_profile_store(url: str | None, default_path: Path, caps: Caps) -> ProfileStore | None:
    """The store a ``--profile-store`` value names (None: :data:`DISABLED`).

    ``url``: None or ``"embedded"`` (SQLite at ``default_path``), ``sqlite:PATH``,
    ``redis://[user:password@]host:port/db`` (also ``rediss://`` and ``unix://``), or ``"none"``.
    """
    # Each backend is imported only when chosen: the Redis client is not needed otherwise.
    if url is None or url == EMBEDDED:
        from recsys.live.sqlite_profiles import SQLiteProfileStore

        return SQLiteProfileStore(default_path, caps)
    if url == DISABLED:
        return None
    if url.startswith("sqlite:"):
        from recsys.live.sqlite_profiles import SQLiteProfileStore

        path = url.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise ProfileStoreError(f"profile store {url!r}: give a file, e.g. sqlite:/var/p.db")
        return SQLiteProfileStore(Path(path), caps)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from recsys.live.redis_profiles import RedisProfileStore

        return RedisProfileStore(url, caps)
    raise ProfileStoreError(
        f"profile store {url!r} is not one of: {EMBEDDED!r} (the default), 'sqlite:PATH', "
        f"'redis://host:port/db', {DISABLED!r}"
    )
