"""Turn the paths a user gave into videos and groups of images, without opening any file.

Discovery only looks at names and permissions; decoding problems surface later, per file,
in the loaders. Everything is sorted so two runs over the same tree see the same order,
which is what makes resumable ingestion and stable frame ids possible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
)

ImageGroupKind = Literal["image", "folder"]
MediaKind = Literal["video", "image"]


@dataclass(frozen=True)
class ImageGroup:
    """Images ingested as one source: a single image file, or every image under a folder."""

    root: Path
    kind: ImageGroupKind
    images: list[Path]


@dataclass(frozen=True)
class InputFailure:
    """A path that cannot be ingested, with a short reason (no path inside the reason)."""

    path: Path
    reason: str

    @property
    def message(self) -> str:
        """One line naming the file, in the same shape as MediaError messages."""
        return f"{self.path}: {self.reason}"


@dataclass
class Discovery:
    """What discover() found: sources to ingest, failures to report, and a count of skips."""

    videos: list[Path] = field(default_factory=list)
    image_groups: list[ImageGroup] = field(default_factory=list)
    errors: list[InputFailure] = field(default_factory=list)
    ignored: int = 0

    @property
    def image_count(self) -> int:
        return sum(len(group.images) for group in self.image_groups)


def media_kind(path: Path) -> MediaKind | None:
    """'video' or 'image' from the file extension (case-insensitive), None when unsupported."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return None


def discover(paths: Sequence[Path | str]) -> Discovery:
    """Classify files and walk folders (recursively, sorted) into videos and image groups.

    A file given directly that is not a supported video/image is an error; inside folders
    such files (and hidden entries such as `.DS_Store` or macOS `._x.jpg` sidecars) are
    only counted in `ignored`. A path reached twice (given twice, or a file also found
    under a folder given earlier) is listed once.
    """
    result = Discovery()
    seen: set[Path] = set()
    for given in paths:
        path = Path(given).expanduser()
        try:
            resolved = path.resolve(strict=True)
        except FileNotFoundError:
            _fail(result, path.absolute(), "no such file or directory")
            continue
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on older Pythons
            _fail(result, path.absolute(), _os_reason(exc))
            continue
        if resolved.is_dir():
            _discover_folder(resolved, result, seen)
        elif resolved.is_file():
            _discover_file(resolved, result, seen)
        else:
            _fail(result, resolved, "not a regular file or folder")
    logger.debug(
        "discovered %d videos, %d images in %d groups, %d errors, %d ignored",
        len(result.videos),
        result.image_count,
        len(result.image_groups),
        len(result.errors),
        result.ignored,
    )
    return result


def _discover_file(path: Path, result: Discovery, seen: set[Path]) -> None:
    kind = media_kind(path)
    if kind is None:
        suffix = path.suffix.lower() or "(no extension)"
        _fail(result, path, f"unsupported file type {suffix}")
        return
    if not os.access(path, os.R_OK):
        _fail(result, path, "permission denied")
        return
    if path in seen:
        return
    seen.add(path)
    if kind == "video":
        result.videos.append(path)
    else:
        result.image_groups.append(ImageGroup(root=path, kind="image", images=[path]))


def _discover_folder(root: Path, result: Discovery, seen: set[Path]) -> None:
    images: list[Path] = []
    # An explicit stack instead of os.walk so that the order is sorted at every level and
    # an unreadable subfolder becomes a reported failure rather than a silent gap.
    stack: list[Path] = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            _fail(result, folder, _os_reason(exc))
            continue
        subfolders: list[Path] = []
        for entry in entries:
            if entry.name.startswith("."):
                result.ignored += 1
                continue
            entry_path = Path(entry.path)
            try:
                # Symlinked folders are not followed: they can loop or leave the tree.
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry_path)
                    continue
                is_file = entry.is_file(follow_symlinks=True)
            except OSError as exc:
                _fail(result, entry_path, _os_reason(exc))
                continue
            kind = media_kind(entry_path) if is_file else None
            if kind is None:
                result.ignored += 1
                continue
            file_path = entry_path.resolve()
            if not os.access(file_path, os.R_OK):
                _fail(result, file_path, "permission denied")
                continue
            if file_path in seen:
                continue
            seen.add(file_path)
            if kind == "video":
                result.videos.append(file_path)
            else:
                images.append(file_path)
        # Reversed so that popping from the end visits subfolders in sorted order.
        stack.extend(reversed(subfolders))
    if images:
        result.image_groups.append(ImageGroup(root=root, kind="folder", images=images))


def _fail(result: Discovery, path: Path, reason: str) -> None:
    # A path can be reached twice (given directly and found under a folder): report once.
    if all(failure.path != path for failure in result.errors):
        result.errors.append(InputFailure(path, reason))


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
