"""CLI subcommands, one module each.

Every module here defines ``register(subparsers) -> None`` which adds its
parser and sets ``func`` (``(argparse.Namespace) -> int``, the exit code) with
``parser.set_defaults(func=...)``. ``router.cli`` discovers them, so adding a
command never touches a shared file.
"""
