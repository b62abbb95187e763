"""Folder or zip -> samples -> uint8 images -> batches: scanning, uploads, decoding, augmentation."""
