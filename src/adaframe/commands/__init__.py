"""The commands that are more than a library call: each a typed config and its run function; none imports another."""
