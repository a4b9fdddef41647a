"""discover(): grouping of images and videos, ordering, and the failures it reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sisyphus_db.media.discover import ImageGroup, InputFailure, discover, media_kind


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_media_kind_by_extension_case_insensitive() -> None:
    assert media_kind(Path("a/B.MP4")) == "video"
    assert media_kind(Path("x.webm")) == "video"
    assert media_kind(Path("x.JPeG")) == "image"
    assert media_kind(Path("x.tif")) == "image"
    assert media_kind(Path("x.txt")) is None
    assert media_kind(Path("noext")) is None


def test_folder_becomes_one_sorted_image_group_and_lists_videos(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    b = _touch(root / "b.jpg")
    a = _touch(root / "a.PNG")
    nested = _touch(root / "sub" / "deeper" / "c.webp")
    sub_first = _touch(root / "sub" / "0.gif")
    clip = _touch(root / "sub" / "drive.mov")
    _touch(root / "notes.txt")
    _touch(root / ".DS_Store")
    _touch(root / "._a.jpg")  # macOS sidecar: hidden, not an image

    found = discover([root])

    assert found.errors == []
    assert found.videos == [clip]
    assert found.image_groups == [ImageGroup(root=root, kind="folder", images=[a, b, sub_first, nested])]
    assert found.ignored == 3
    assert found.image_count == 4


def test_single_files_and_folders_mixed(tmp_path: Path) -> None:
    photo = _touch(tmp_path / "photo.jpg")
    video = _touch(tmp_path / "clip.mp4")
    folder = tmp_path / "album"
    inside = _touch(folder / "x.bmp")
    video_in_folder = _touch(folder / "y.mkv")

    found = discover([video, folder, photo])

    assert found.videos == [video, video_in_folder]
    assert found.image_groups == [
        ImageGroup(root=folder, kind="folder", images=[inside]),
        ImageGroup(root=photo, kind="image", images=[photo]),
    ]


def test_paths_are_absolute_resolved_and_deduplicated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = _touch(tmp_path / "a" / "p.jpg")
    monkeypatch.chdir(tmp_path / "a")

    found = discover([Path("p.jpg"), Path("../a/p.jpg"), tmp_path / "a"])

    assert found.image_groups == [ImageGroup(root=photo, kind="image", images=[photo])]
    assert found.image_groups[0].root.is_absolute()


def test_folder_without_images_gives_no_group(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "videos" / "v.avi")

    found = discover([tmp_path / "empty", tmp_path / "videos"])

    assert found.image_groups == []
    assert found.videos == [tmp_path / "videos" / "v.avi"]


def test_missing_and_unsupported_explicit_paths_are_errors(tmp_path: Path) -> None:
    text = _touch(tmp_path / "readme.txt")
    bare = _touch(tmp_path / "Makefile")
    good = _touch(tmp_path / "ok.jpeg")

    found = discover([tmp_path / "nope.mp4", text, bare, good])

    assert found.errors == [
        InputFailure(tmp_path / "nope.mp4", "no such file or directory"),
        InputFailure(text, "unsupported file type .txt"),
        InputFailure(bare, "unsupported file type (no extension)"),
    ]
    assert found.errors[0].message == f"{tmp_path / 'nope.mp4'}: no such file or directory"
    assert [group.root for group in found.image_groups] == [good]


def test_order_is_deterministic_across_runs(tmp_path: Path) -> None:
    for name in ["z.jpg", "m.jpg", "a.jpg", "k/q.png", "k/b.png"]:
        _touch(tmp_path / name)
    first = discover([tmp_path])
    second = discover([tmp_path])
    assert first == second
    assert [p.name for p in first.image_groups[0].images] == ["a.jpg", "m.jpg", "z.jpg", "b.png", "q.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_file_and_folder_are_reported(tmp_path: Path) -> None:
    locked_file = _touch(tmp_path / "locked.jpg")
    locked_file.chmod(0)
    locked_dir = tmp_path / "private"
    _touch(locked_dir / "inside.jpg")
    locked_dir.chmod(0)
    try:
        found = discover([locked_file, tmp_path])
    finally:
        locked_dir.chmod(0o755)
        locked_file.chmod(0o644)
    assert InputFailure(locked_file, "permission denied") in found.errors
    assert InputFailure(locked_dir, "permission denied") in found.errors


def test_permission_errors_are_reported_even_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate what a non-root user sees, so the branch is covered where tests run as root."""
    readable = _touch(tmp_path / "pub" / "ok.jpg")
    locked_file = _touch(tmp_path / "pub" / "locked.jpg")
    locked_dir = tmp_path / "pub" / "private"
    _touch(locked_dir / "inside.jpg")
    real_access = os.access
    real_scandir = os.scandir

    def fake_access(path: object, mode: int, **kwargs: object) -> bool:
        return False if Path(str(path)) == locked_file else real_access(path, mode)  # type: ignore[arg-type]

    def fake_scandir(path: object):  # type: ignore[no-untyped-def]
        if Path(str(path)) == locked_dir:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", fake_access)
    monkeypatch.setattr(os, "scandir", fake_scandir)

    found = discover([tmp_path / "pub", locked_file])

    assert found.errors == [
        InputFailure(locked_file, "permission denied"),
        InputFailure(locked_dir, "permission denied"),
    ]
    assert found.image_groups == [ImageGroup(root=tmp_path / "pub", kind="folder", images=[readable])]
