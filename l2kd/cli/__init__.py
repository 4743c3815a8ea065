"""The command line's pieces for people (rich lives here and in cli.py only): `common` holds the
consoles, one module per subcommand moves here from cli.py as the CLI becomes a package."""
