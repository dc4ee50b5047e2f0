"""The database itself: the row layout, URLs, engines and connections, schema, migrations."""
