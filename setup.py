"""Maps the top-level folders of the repository (hardware/, teleop/, data/, policy/) to the
duet.* import names, so the layout stays flat and the imports stay namespaced."""

from setuptools import find_packages, setup

CORES = ("hardware", "teleop", "data", "policy")

packages = ["duet", "duet.apps", *[f"duet.{p}" for p in find_packages(include=[f"{c}*" for c in CORES])]]
setup(
    packages=packages,
    package_dir={"duet": "duet", **{f"duet.{c}": c for c in CORES}},
    package_data={"": ["*.yaml", "*.json"]},
)
