"""Organizations of their own for tests, so that no test sees another's processes."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Org:
    """An organization with a writer and a reader token."""

    org_id: str
    writer: str
    reader: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.writer}"}

    def metadata(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.writer}"),)
