"""fencing tokens on every claim; group leases and live replicas

Revision ID: 0002_fencing
Revises: 0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_fencing"
down_revision = "0001"
branch_labels = None
depends_on = None

_FENCED = ("leases", "rollback_intents", "outbox_messages")


def upgrade() -> None:
    for table in _FENCED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("fence", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.create_table(
        "group_leases",
        sa.Column("key", sa.String(length=1000), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("fence", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_group_leases")),
    )
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )


def downgrade() -> None:
    op.drop_table("replicas")
    op.drop_table("group_leases")
    for table in reversed(_FENCED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("fence")
