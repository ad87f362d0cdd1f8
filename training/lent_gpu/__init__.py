"""A training burst on a lent GPU machine that has no network (see README.md)."""
