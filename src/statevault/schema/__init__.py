"""Typed state: schemas (name, version, type), their stored JSON Schema documents, and
migrations between versions. See docs/migrations.md."""
