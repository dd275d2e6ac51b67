"""The code behind each `t2i` command, one module a command (pipeline.cli names them); DVC stages
run them through the CLI."""
