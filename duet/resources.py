"""The files duet ships (rigs, arm models, the node graph, launch parameters, the RViz config),
found through the installed package, never the current directory.

A shipped file is named by its path in the repository, e.g. ``shipped_path("launch/graph.yaml")``
or ``shipped_path("hardware/configs/rigs/aloha.yaml")``. The repository keeps them in top-level
folders (launch/, hardware/configs/); setup.py copies them into the wheel under duet/share/
(``duet/share/launch/graph.yaml``, ``duet/share/hardware/configs/...``). An editable install
(``pip install -e .``, the Makefile's) has no duet/share/: there the package sits in the
checkout, so the same path is read beside it.

Which folders ship, and the file patterns, are SHIPPED below; setup.py reads it from here.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path, PurePosixPath

from duet.errors import ConfigError

# repository folder -> file patterns shipped in the wheel (under duet/share/<folder>/)
SHIPPED: dict[str, tuple[str, ...]] = {
    "hardware/configs": ("arms/*.yaml", "rigs/*.yaml"),
    "launch": ("graph.yaml", "params/*.yaml", "rviz/*.rviz"),
}
SHARE = "share"  # duet/share/ in the wheel


class ShippedFileNotFound(ConfigError):
    """A file duet should ship is missing from this install."""


def _roots() -> list[Path]:
    """Where shipped files live, in order: duet/share/ (a wheel), then the checkout that holds
    the duet package (an editable install; recognised by its pyproject.toml)."""
    package = Path(str(files("duet")))
    roots = [package / SHARE]
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "launch").is_dir():
        roots.append(checkout)
    return roots


def shipped_dir(folder: str) -> Path:
    """A shipped folder (e.g. ``hardware/configs/rigs``); it may be empty of files but exists."""
    rel = PurePosixPath(folder)
    for root in _roots():
        if (root / rel).is_dir():
            return root / rel
    raise ShippedFileNotFound(
        f"shipped folder {folder!r} not found in this duet install (looked in "
        f"{', '.join(str(r) for r in _roots())}): reinstall duet (pip install duet or pip install -e .)"
    )


def shipped_path(rel: str) -> Path:
    """A shipped file by its repository path (``launch/graph.yaml``)."""
    p = PurePosixPath(rel)
    for root in _roots():
        if (root / p).is_file():
            return root / p
    raise ShippedFileNotFound(
        f"shipped file {rel!r} not found in this duet install (looked in "
        f"{', '.join(str(r) for r in _roots())}): reinstall duet (pip install duet or pip install -e .)"
    )


def shipped_files() -> list[str]:
    """Every file this install ships, by repository path (sorted)."""
    out: set[str] = set()
    for folder, patterns in SHIPPED.items():
        for root in _roots():
            base = root / folder
            for pattern in patterns:
                out.update(
                    str(PurePosixPath(folder) / q.relative_to(base).as_posix()) for q in base.glob(pattern)
                )
    return sorted(out)
