"""Opening an artifact version for reading: the one way in, checksums verified first.

Serving, evaluation and the index operations all start from :func:`open_version`, so none
of them reads a file that does not match the manifest's sha256, and a corrupt file is never
copied into (and re-signed by) a derived version.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from recsys.artifact.layout import CONFIG_FILE, LATEST
from recsys.artifact.settings import ModelSettings, read_settings
from recsys.artifact.versions import Manifest, read_manifest, resolve_version, verify_artifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactVersion:
    """An opened version: its folder, manifest and ``config.json``."""

    path: Path
    manifest: Manifest
    settings: ModelSettings

    @property
    def label(self) -> str:
        """``name/version``."""
        return f"{self.manifest.name}/{self.manifest.version}"


def open_version(artifact: str | Path, *, verify: bool = True) -> ArtifactVersion:
    """Resolve ``artifact`` (version or model folder), verify its checksums, read its config.

    ``verify=False`` only when the caller has just verified this very folder (hashing a large
    version twice in one load costs seconds). Raises ArtifactError naming what is wrong.
    """
    started = time.perf_counter()
    path = Path(artifact)
    if (path / LATEST).is_file():  # a model folder; otherwise the manifest names what is wrong
        path = resolve_version(path)
    manifest = verify_artifact(path) if verify else read_manifest(path)
    settings = read_settings(path / CONFIG_FILE)
    log.info(
        "opened %s (%d files%s) in %.2f s",
        path,
        len(manifest.files),
        ", verified" if verify else "",
        time.perf_counter() - started,
    )
    return ArtifactVersion(path, manifest, settings)
