"""Indexes on the catalog dashboard's facet expressions (radflow.explore.facets.BUCKETS), and
the ``finding`` field of the cohort language reads findings by code.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from radflow.catalog.models.mirror import BUCKETS, index_expression

    dialect = op.get_bind().dialect.name
    for key in BUCKETS:
        op.create_index(f"ix_series_facet_{key}", "series",
                        [sa.text(index_expression(key, dialect))])
    op.create_index("ix_finding_code_series", "finding", ["code", "series_pk"])


def downgrade() -> None:
    from radflow.catalog.models.mirror import BUCKETS

    op.drop_index("ix_finding_code_series", "finding")
    for key in BUCKETS:
        op.drop_index(f"ix_series_facet_{key}", "series")
