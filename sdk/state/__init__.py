"""State: attrs models, a snapshot plus an append-only journal, and lease locks."""
