"""The code behind each `t2i` command, one module a command (stages/commands.py names them);
DVC stages run them through the CLI (stages/cli.py)."""
