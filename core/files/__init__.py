"""Bytes on disk, no ML: atomic writes, content digests, safe names, zip safety."""
