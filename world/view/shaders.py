"""Shaders by name from the top-level `shaders/` folder (`NAME.vert.glsl`, `NAME.frag.glsl`)."""

from __future__ import annotations

from pathlib import Path

from .config import SHADER_DIR
from .frame import ViewError


def shader_paths(name: str, folder: Path = SHADER_DIR) -> tuple[Path, Path]:
    """The vertex and fragment source files of shader `name`; ViewError if one is missing."""
    if not name or not name.replace("_", "").isalnum():
        raise ViewError(f"bad shader name {name!r}")
    vert, frag = folder / f"{name}.vert.glsl", folder / f"{name}.frag.glsl"
    for path in (vert, frag):
        if not path.is_file():
            raise ViewError(f"shader source {path} is missing")
    return vert, frag


def load_shader(name: str, folder: Path = SHADER_DIR):  # -> panda3d.core.Shader
    """Compile-ready `Shader` for `name` (GLSL); ViewError if the sources are missing or invalid."""
    from panda3d.core import Filename, Shader

    vert, frag = shader_paths(name, folder)
    shader = Shader.load(
        Shader.SL_GLSL,
        vertex=Filename.from_os_specific(str(vert)),
        fragment=Filename.from_os_specific(str(frag)),
    )
    if shader is None:
        raise ViewError(f"shader {name!r} failed to load")
    return shader
