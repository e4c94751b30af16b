"""Process plumbing: children of the scripts (processes), the CPU allocator (allocator)."""
