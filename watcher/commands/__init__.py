"""The subcommands of `watcher`, one module per group.

Each module listed in COMMAND_MODULES has `add_parsers(subparsers)`; every parser it adds takes
`--config` and sets `handler`, a function from the parsed arguments to the exit code
(0 ok, 1 findings or a failed action, 2 bad usage or no readable configuration).
To add a command, write its module and list it here.
"""

COMMAND_MODULES: tuple[str, ...] = (
    "watcher.commands.check",
    "watcher.commands.run",
    "watcher.commands.incidents",
    "watcher.commands.operate",
    "watcher.commands.drill",
    "watcher.commands.ruletest",
    "watcher.commands.backtest",
)
