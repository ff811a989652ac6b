"""Maps the top-level folders of the repository (hardware/, teleop/, data/, policy/) to the
duet.* import names, so the layout stays flat and the imports stay namespaced.

The files duet ships (rigs, arm models, launch/graph.yaml, launch parameters, the RViz config)
stay in their repository folders (hardware/configs/, launch/); building the wheel copies them
into duet/share/<repository path>, where duet.resources.shipped_path finds them. The folders
and patterns are duet/resources.py's SHIPPED (read here without importing duet).
"""

import ast
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CORES = ("hardware", "teleop", "data", "policy")


def shipped_patterns() -> dict[str, tuple[str, ...]]:
    tree = ast.parse((HERE / "duet" / "resources.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "SHIPPED":
            return ast.literal_eval(node.value)
    raise RuntimeError("duet/resources.py has no SHIPPED mapping")


def shipped_files() -> list[str]:
    """The repository paths of the files the wheel ships under duet/share/."""
    out = []
    for folder, patterns in shipped_patterns().items():
        for pattern in patterns:
            out += [p.relative_to(HERE).as_posix() for p in sorted((HERE / folder).glob(pattern))]
    return out


class BuildPyWithShared(build_py):
    """build_py, plus the shipped files copied into <build_lib>/duet/share/. An editable
    install skips them: it reads them from the checkout."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for rel in shipped_files():
            target = Path(self.build_lib) / "duet" / "share" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / rel, target)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs += [str(Path(self.build_lib) / "duet" / "share" / rel) for rel in shipped_files()]
        return outputs


packages = ["duet", "duet.apps", *[f"duet.{p}" for p in find_packages(include=[f"{c}*" for c in CORES])]]
setup(
    packages=packages,
    package_dir={"duet": "duet", **{f"duet.{c}": c for c in CORES}},
    package_data={"": ["*.yaml", "*.json"]},
    cmdclass={"build_py": BuildPyWithShared},
)
