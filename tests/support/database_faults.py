"""Faults of the delivery database that SQLite itself raises, planted through a second
connection to the pod's real file."""

from __future__ import annotations

# Every new webhook is refused, as a full disk would refuse it.
REFUSE_INSERTS = """
CREATE TRIGGER refuse_inserts BEFORE INSERT ON webhook_outbox
BEGIN SELECT RAISE(ABORT, 'disk full'); END;
"""
REPAIR = "DROP TRIGGER refuse_inserts;"
