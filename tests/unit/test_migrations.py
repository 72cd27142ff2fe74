"""The migrations form one numbered chain: 0001, 0002, ... each revising the one before."""

from pathlib import Path

from alembic.script import ScriptDirectory

from server.storage.migrate import MIGRATIONS, next_revision_id


def test_revisions_are_numbered_in_the_order_they_apply() -> None:
    scripts = ScriptDirectory(str(MIGRATIONS))
    oldest_first = list(reversed(list(scripts.walk_revisions())))
    assert oldest_first, "no migrations found"
    previous = None
    for number, script in enumerate(oldest_first, start=1):
        assert script.revision == f"{number:04d}"
        assert script.down_revision == previous
        assert Path(script.path).name.startswith(f"{script.revision}_")
        previous = script.revision
    assert scripts.get_heads() == [previous]
    assert next_revision_id() == f"{len(oldest_first) + 1:04d}"
