"""versions: incidents per target and version, their findings, a rule episode's version

Revision ID: 0003_versions
Revises: 0002_fencing
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa

from watcher.store.tables import UTCDateTime


revision = '0003_versions'
down_revision = '0002_fencing'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rule_states') as batch:
        batch.add_column(sa.Column('version', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('settling', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    op.drop_index('uq_incidents_open_rule', table_name='incidents')
    op.create_index('ix_incidents_target_version', 'incidents', ['target', 'live_version'])
    op.create_table(
        'incident_findings',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('incident_id', sa.Integer(), nullable=False),
        sa.Column('rule_id', sa.String(length=300), nullable=False),
        sa.Column('rule_hash', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('value', sa.Float(), nullable=True),
        sa.Column('peak_value', sa.Float(), nullable=True),
        sa.Column('threshold', sa.Float(), nullable=False),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('last_at', UTCDateTime(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('verify_outcome', sa.String(length=16), nullable=True),
        sa.Column('evidence', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ['incident_id'], ['incidents.id'], name='fk_incident_findings_incident_id_incidents'
        ),
        sa.PrimaryKeyConstraint('id', name='pk_incident_findings'),
    )
    op.create_index('uq_incident_findings_rule', 'incident_findings', ['incident_id', 'rule_id'], unique=True)
    op.create_index('ix_incident_findings_rule_active', 'incident_findings', ['rule_id', 'active'])
    # Incidents opened before this revision hold their opening rule as their one finding.
    op.execute(
        "INSERT INTO incident_findings (incident_id, rule_id, rule_hash, kind, value, peak_value, "
        "threshold, at, last_at, active, evidence) "
        "SELECT id, rule_id, rule_hash, 'opened', NULL, NULL, 0, opened_at, opened_at, "
        "CASE WHEN resolved_at IS NULL THEN true ELSE false END, '{}' FROM incidents"
    )


def downgrade() -> None:
    op.drop_index('ix_incident_findings_rule_active', table_name='incident_findings')
    op.drop_index('uq_incident_findings_rule', table_name='incident_findings')
    op.drop_table('incident_findings')
    op.drop_index('ix_incidents_target_version', table_name='incidents')
    op.create_index(
        'uq_incidents_open_rule',
        'incidents',
        ['rule_id'],
        unique=True,
        sqlite_where=sa.text('resolved_at IS NULL'),
        postgresql_where=sa.text('resolved_at IS NULL'),
    )
    with op.batch_alter_table('rule_states') as batch:
        batch.drop_column('settling')
        batch.drop_column('version')
