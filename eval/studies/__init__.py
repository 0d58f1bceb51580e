"""Studies behind the documentation's tables, each a `couplednoise study NAME` subcommand."""
