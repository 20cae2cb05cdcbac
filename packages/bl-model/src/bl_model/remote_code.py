"""The model's source saved beside its weights, so transformers' Auto classes load a checkpoint without bl-model.

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)   # any environment with transformers + torch
    AutoProcessor.from_pretrained(path, trust_remote_code=True)

transformers' remote-code loader imports the module named in the config's `auto_map` and copies, recursively, the
files it imports with `from .name import …` out of the checkpoint folder — flat, one folder, no sub-packages.
`save_code` writes that flat copy of a class's module and everything it imports relatively (a sub-package's
`__init__.py` becomes `<package>.py`, `from .pkg.mod import` becomes `from .mod import`). With bl-model imported
the Auto classes need no `trust_remote_code`: `bl_model` registers its classes with them on import.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

AUTO_MAP = {
    "AutoConfig": "configuration.BehaviorLlavaConfig",
    "AutoModelForCausalLM": "modeling.BehaviorLlavaForCausalLM",
}
PROCESSOR_AUTO_MAP = {
    "AutoProcessor": "processing.BehaviorLlavaProcessor",
    "AutoImageProcessor": "image_processing.BehaviorLlavaImageProcessor",
}
_NESTED_RELATIVE = re.compile(r"^(\s*from \.)(?:\w+\.)+(\w+ import)", re.MULTILINE)


def _module_file(package_dir: Path, dotted: str) -> Path:
    """`from .a.b import` inside `package_dir` -> the file of module `a.b` (a module or a package)."""
    base = package_dir.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"relative import .{dotted} of {package_dir} has no source file")


def _flat_name(path: Path) -> str:
    return path.parent.name if path.name == "__init__.py" else path.stem


def code_closure(module_file: Path) -> dict[str, Path]:
    """A module's file and every file it imports relatively (`from .x import`), by flat module name."""
    files: dict[str, Path] = {}
    todo = [Path(module_file)]
    while todo:
        path = todo.pop()
        name = _flat_name(path)
        if name in files:
            if files[name] != path:
                raise ValueError(f"two modules flatten to {name}.py: {files[name]} and {path}")
            continue
        files[name] = path
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                todo.append(_module_file(path.parent, node.module))
    return files


def save_code(directory: str | Path, cls: type) -> list[Path]:
    """Write `cls`'s module and its relative imports into `directory` as flat files -> the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in sorted(code_closure(Path(sys.modules[cls.__module__].__file__)).items()):
        target = directory / f"{name}.py"
        target.write_text(_NESTED_RELATIVE.sub(r"\1\2", source.read_text(encoding="utf-8")), encoding="utf-8")
        written.append(target)
    return written
