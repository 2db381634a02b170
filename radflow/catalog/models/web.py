"""The web app's sessions, kept on the server: the browser's cookie holds only a random token,
whose hash finds the row. Logging out deletes the row, so a copied cookie stops working at once;
an admin lists and revokes them (``radflow site sessions``). The hub's web app keeps the same
rows in its own database (:class:`radflow.hub.models.HubWebSession`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import utcnow


class WebSessionFields(SQLModel):
    """The columns of a web session (a site's and the hub's tables share them)."""

    id: str = Field(primary_key=True)  # public: what lists show and revocation takes
    token_hash: str = Field(index=True, unique=True)  # sha256 of the cookie's token
    sub: str | None = Field(default=None, index=True)  # who logged in; None until then
    name: str | None = None
    roles: str = ""  # space-separated, as granted at log-in
    data: str = Field(default="{}", sa_type=Text)  # JSON (a column each table owns)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)
    user_agent: str | None = None
    address: str | None = None


class WebSession(WebSessionFields, table=True):
    """A session of the site's web app (the worklist, Explore, the federation page)."""

    __tablename__ = "web_session"
