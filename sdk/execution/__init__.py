"""Apply: journaled, idempotent actions in dependency order."""
