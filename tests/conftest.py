"""Settings of every test session."""

import shutil
import tempfile
from pathlib import Path

import pytest

# The folder this session made for itself, removed when it ends.
_OWN_BASETEMP = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Each session keeps its temporary files in a folder of its own.

    pytest's shared one (`pytest-of-<user>`) is made private again by every
    session that starts, while embedded PostgreSQL needs the folders above
    its data readable by its own user: a second session started beside this
    one (another worktree's, a single test run by hand) would fail this
    one's next initdb. `--basetemp` chooses the folder instead.
    """
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="htk-tests-")
        config.stash[_OWN_BASETEMP] = Path(config.option.basetemp)


def pytest_unconfigure(config: pytest.Config) -> None:
    if (own := config.stash.get(_OWN_BASETEMP, None)) is not None:
        shutil.rmtree(own, ignore_errors=True)
