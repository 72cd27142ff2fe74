"""Settings of every test session, and the stack the end-to-end and fuzz tests share."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import Stack, running_stack

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


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack with the default settings for the session (a start and a stop
    cost seconds): the end-to-end and fuzz tests work in organizations of
    their own on it. Tests that need other settings, or kill and restart
    parts, start stacks of their own."""
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running
