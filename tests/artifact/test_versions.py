"""Artifact versions: atomic, checksummed, LATEST updated last, derived versions isolated."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.artifact.versions import (
    ArtifactError,
    Manifest,
    read_manifest,
    resolve_version,
    verify_artifact,
    write_version,
)


def write(artifacts: Path, content: bytes = b"weights", base: Path | None = None) -> Path:
    with write_version(artifacts, "m", Manifest("m", ""), base=base) as tmp:
        (tmp / "sub").mkdir(exist_ok=True)
        (tmp / "sub" / "w.bin").unlink(missing_ok=True)
        (tmp / "sub" / "w.bin").write_bytes(content)
    return resolve_version(artifacts / "m")


def test_versions_count_up_and_latest_follows(tmp_path: Path) -> None:
    first = write(tmp_path)
    second = write(tmp_path, b"better weights")
    assert (first.name, second.name) == ("v0001", "v0002")
    assert (tmp_path / "m" / "LATEST").read_text().strip() == "v0002"
    manifest = verify_artifact(second)
    assert list(manifest.files) == ["sub/w.bin"]
    assert manifest.version == "v0002"


def test_a_failed_write_leaves_no_version_and_latest_unchanged(tmp_path: Path) -> None:
    write(tmp_path)

    def crash_mid_write() -> None:
        with write_version(tmp_path, "m", Manifest("m", "")) as tmp:
            (tmp / "half").write_bytes(b"half-written")
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        crash_mid_write()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["LATEST", "v0001"]
    assert resolve_version(tmp_path / "m").name == "v0001"


def test_tampering_is_detected(tmp_path: Path) -> None:
    version = write(tmp_path)
    (version / "sub" / "w.bin").write_bytes(b"weightz")
    with pytest.raises(ArtifactError, match=r"w\.bin: sha256 does not match"):
        verify_artifact(version)
    (version / "sub" / "w.bin").unlink()
    with pytest.raises(ArtifactError, match="listed in the manifest but missing"):
        verify_artifact(version)


def test_unlisted_files_are_detected(tmp_path: Path) -> None:
    version = write(tmp_path)
    (version / "intruder.py").write_text("import os")
    with pytest.raises(ArtifactError, match="files not in the manifest"):
        verify_artifact(version)


def test_derived_version_never_changes_its_base(tmp_path: Path) -> None:
    base = write(tmp_path, b"original")
    derived = write(tmp_path, b"changed", base=base)
    assert (base / "sub" / "w.bin").read_bytes() == b"original"
    assert (derived / "sub" / "w.bin").read_bytes() == b"changed"
    verify_artifact(base)
    verify_artifact(derived)


def test_resolve_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="neither an artifact version"):
        resolve_version(tmp_path)
    (tmp_path / "LATEST").write_text("v0042\n")
    with pytest.raises(ArtifactError, match="names v0042, which does not exist"):
        resolve_version(tmp_path)
    (tmp_path / "LATEST").write_text("../../etc\n")
    with pytest.raises(ArtifactError, match="does not name a version"):
        resolve_version(tmp_path)
    (tmp_path / "v0001").mkdir()
    (tmp_path / "v0001" / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match="malformed manifest"):
        read_manifest(tmp_path / "v0001")


def test_bad_model_name(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="model name"),
        write_version(tmp_path, "../x", Manifest("", "")),
    ):
        pass
