"""The pure core: everything a hub decides, with no broker, database or network (tests need none)."""
