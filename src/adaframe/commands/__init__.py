"""Every subcommand of ``adaframe``: each a typed config and its run function; none imports another."""
