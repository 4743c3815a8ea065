"""The command line's subcommands, one module each, and everything they print for people (rich is
imported here only; cli.py holds the parser and `main`):

    common    the consoles (stderr for messages, stdout for results) and number formats
    signals   SIGTERM/SIGHUP unwinding like Ctrl-C
    train     `cli.py train`        pretrain  `cli.py pretrain`
    grid      `cli.py grid` (the dry run's plan and cost, the live table, the summary)
    bench     `cli.py bench`        report    `cli.py report` (also the grid's last step)
    inputs    `cli.py validate`, `cli.py ls`, `cli.py data convert`: about a trial's inputs, no training
"""
