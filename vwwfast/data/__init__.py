"""Everything before a batch exists: sources, shards, views, rendering. It knows no teacher,
trainer, record or export."""
