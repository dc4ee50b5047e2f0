"""Where prepared batches are stored: one write skeleton (base), PostgreSQL and SQLite."""
