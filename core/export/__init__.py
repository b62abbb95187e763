"""The deliverables and loading them back: the timm bundle, its zip, load_bundle."""
