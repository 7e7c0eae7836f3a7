"""Subcommands of the `cadencia` console script, one module each.

Every module here defines:

- ``NAME``: the subcommand (``"generate"``), ``HELP``: one line for ``cadencia --help``;
- ``add_arguments(parser)``: declares its flags on an ``argparse.ArgumentParser``;
- ``run(args) -> int``: does the work and returns the exit status.

Modules are discovered, so adding a command never touches a shared file. Heavy imports
(torch, aiortc, panda3d) belong inside ``run`` so that ``cadencia --help`` stays fast.
"""
