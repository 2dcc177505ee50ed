"""
`hf-ddpm`: each subcommand's module adds it with `register(subparsers)`, whose handler returns an exit code (None: 0).
Exit codes: 0 success, 2 bad usage (argparse errors, `UsageError`, a missing file or folder: `FileNotFoundError`), 1
any other failure; errors print as one line (`--debug`: the traceback).
"""

import argparse
import functools
import importlib
import sys

from ._errors import UsageError  # re-exported: `hf_ddpm.cli.UsageError` predates hf_ddpm._errors

# subcommand modules, in the order `--help` lists them
COMMAND_MODULES = [
    "hf_ddpm.training.cli",
    "hf_ddpm.sampling",
    "hf_ddpm.evaluation.cli",
    "hf_ddpm.analytic",
    "hf_ddpm.hub",
    "hf_ddpm.convert",
]


EXAMPLE = """Example:
  hf-ddpm train --output_dir outputs/ddpm-digits
  hf-ddpm sample outputs/ddpm-digits --num_images 64 --trajectory
  hf-ddpm push outputs/ddpm-digits your-name/ddpm-digits
"""


# argparse with the descriptions and examples kept verbatim in --help
_Parser = functools.partial(argparse.ArgumentParser, formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hf-ddpm",
        description="DDPM and Improved DDPM on the Hugging Face stack.",
        epilog=EXAMPLE,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("hf-ddpm: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one readable line for users; the traceback with --debug
        if args.debug:
            raise
        code = 2 if isinstance(error, (UsageError, FileNotFoundError)) else 1
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"hf-ddpm {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
