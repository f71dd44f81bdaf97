"""Who is asking: the admin, a person from an identity provider, or Tether itself."""

from __future__ import annotations

from dataclasses import dataclass

from tether.model import Email

__all__ = ["Caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller. ``subject`` is how events name them."""

    subject: str
    email: Email | None = None
    is_admin: bool = False

    @classmethod
    def admin(cls) -> Caller:
        """The holder of the admin token."""
        return cls("admin", None, True)

    @classmethod
    def user(cls, email: Email, *, admin: bool = False) -> Caller:
        """A person named by an identity provider; admin when in an admin group."""
        return cls(f"user:{email}", email, admin)

    @classmethod
    def system(cls, name: str) -> Caller:
        """Tether's own processes (expiry sweeps, the demo seed)."""
        return cls(f"system:{name}", None, True)

    def owns(self, owner: str | None) -> bool:
        return self.email is not None and owner == self.email
