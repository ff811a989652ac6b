"""Shared test configuration. Tests run from a clean checkout: no sys.path edits, no
network, no home paths (HOME is redirected so calibration and caches land in tmp).

Hypothesis profiles:
- "ci": deterministic. Examples derived from each test's source (derandomize), no example
  database, no deadline and no too_slow health check (both depend on the machine's load), so a
  run never fails on an example that earlier runs did not meet. CI (CI set) and `make test`.
- "dev": exploratory. Random examples each run; the local database (.hypothesis/) replays the
  failures found. Plain `pytest` outside CI, or `make test HYPOTHESIS_PROFILE=dev`.
`--hypothesis-profile=NAME` overrides the choice. A test's own @settings may set max_examples
or deadline, never derandomize or database (checked at collection).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

_BASE = settings.get_profile("default")  # not the current one: hypothesis loads its own "ci" when CI is set
settings.register_profile(
    "ci",
    _BASE,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", _BASE, deadline=None)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


settings.load_profile("ci" if _in_ci() else "dev")


def pytest_collection_modifyitems(config, items):
    """A test's @settings must not undo the profile's determinism."""
    profile = settings.default
    for item in items:
        own = getattr(getattr(item, "obj", None), "_hypothesis_internal_use_settings", None)
        if own is not None and (own.derandomize, own.database) != (profile.derandomize, profile.database):
            raise pytest.UsageError(
                f"{item.nodeid}: its @settings sets derandomize or database, which belong to the hypothesis "
                f"profile ({settings.get_current_profile_name()!r}): set only max_examples / deadline there"
            )


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))
    yield
