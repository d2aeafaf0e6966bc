"""One module per ``mhmoe`` subcommand, each with ``main(argv) -> int``."""
