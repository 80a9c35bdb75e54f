"""LUFFY's command line for the evaluation scripts: ``--protocol``, fire-style booleans and LUFFY's flags.

LUFFY's ``generate_vllm.py`` reads its arguments with ``fire``, so its README writes booleans with a
value (``--remove_system True --add_oat_evaluate True``). Here each boolean flag takes an optional
value (``True``/``False``/``true``/``1``/``0``/``yes``/``no``; the bare flag means true).
A LUFFY flag that means nothing in the chosen protocol is refused with the reason, never ignored.
"""

from __future__ import annotations

import argparse

from luffy.data.errors import LuffyDataError
from luffy.evaluation.luffy_prompts import LUFFY_TEMPLATES
from luffy.prompts import TEMPLATES
from luffy.scoring.protocols import DEFAULT_PROTOCOL, PROTOCOLS, LuffyOptions

PROTOCOL_SETTING_KEYS = ("protocol", "add_think_before_answer", "no_split_think", "add_oat_evaluate", "any_true")
"""Scoring settings that change a results line's verdicts (recorded with it, matched on resume)."""

DEFAULT_TOP_P = {"luffy": 1.0, "trainer": 0.95}
ALL_TEMPLATES = tuple(dict.fromkeys((*TEMPLATES, *LUFFY_TEMPLATES)))

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


class ProtocolArgError(LuffyDataError):
    """An option that the chosen protocol cannot honour (the message says why)."""


def fire_bool(value: str) -> bool:
    """A boolean written as fire accepts it on a command line (``True``, ``false``, ``1``, ...)."""
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False (or 1/0), got {value!r}")


def add_bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """``--name`` (true), ``--name True``/``--name False``; unset is None (the protocol decides)."""
    parser.add_argument(f"--{name}", nargs="?", const=True, default=None, type=fire_bool, metavar="BOOL", help=help)


def add_protocol_args(parser: argparse.ArgumentParser, generate: bool) -> None:
    """Add ``--protocol`` and LUFFY's scoring flags (and, for the generator, its generation flags)."""
    parser.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        choices=PROTOCOLS,
        help="luffy (default): LUFFY's own evaluation (no system turn, top_p 1.0, think-aware math-verify, "
        "macro average); trainer: the training prompt and the trainer's reward",
    )
    add_bool_flag(
        parser,
        "add_think_before_answer",
        "luffy: grade only the text after </think> even when the prompt does not end in <think>\\n",
    )
    add_bool_flag(parser, "no_split_think", "luffy: grade the whole response, never split at </think>")
    add_bool_flag(parser, "add_oat_evaluate", "luffy: the verdict of the OAT-style boxed grader")
    add_bool_flag(parser, "any_true", "luffy, with --add_oat_evaluate: correct when either grader says so")
    if generate:
        add_bool_flag(parser, "skip_scoring", "write responses without verdicts (score later with score.py)")
        add_bool_flag(parser, "force_generate", "True: regenerate everything (as --overwrite); False: resume")
        parser.add_argument("--output_eval", default=None, help="LUFFY's; refused (its script never writes there)")


def _refuse(flag: str, why: str) -> None:
    raise ProtocolArgError(f"{flag}: {why}")


def resolve_protocol_args(args: argparse.Namespace, generate: bool) -> argparse.Namespace:
    """Check LUFFY's flags against ``args.protocol`` and fill in the protocol's defaults, in place.

    Raises:
        ProtocolArgError: a flag with no meaning in the protocol (the message says why).
    """
    luffy = args.protocol == "luffy"
    scoring_flags = ("add_think_before_answer", "no_split_think", "add_oat_evaluate", "any_true")
    for name in scoring_flags:
        if not luffy and getattr(args, name):
            _refuse(
                f"--{name}",
                "a switch of LUFFY's scoring; the trainer protocol scores as the trainer's "
                "reward does (use --protocol luffy)",
            )
        setattr(args, name, bool(getattr(args, name)))
    if args.any_true and not args.add_oat_evaluate:
        _refuse("--any_true", "it combines math-verify with the OAT grader, so it needs --add_oat_evaluate True")
    if not generate:
        return args
    if args.output_eval is not None:
        _refuse(
            "--output_eval",
            "LUFFY's script takes it but never writes to it; the summary goes to "
            "--summary_out (default OUTPUT.summary.json)",
        )
    if luffy and args.remove_system is False:
        _refuse(
            "--remove_system False",
            "LUFFY's protocol always drops the system turn (its script asserts "
            "remove_system); use --protocol trainer to keep it",
        )
    args.remove_system = True if luffy else bool(args.remove_system)
    templates = LUFFY_TEMPLATES if luffy else TEMPLATES
    if args.template not in templates:
        _refuse(f"--template {args.template}", f"not a template of --protocol {args.protocol} ({', '.join(templates)})")
    if args.top_p is None:
        args.top_p = DEFAULT_TOP_P[args.protocol]
    if args.force_generate:
        args.overwrite = True
    args.skip_scoring = bool(args.skip_scoring)
    return args


def luffy_options(args: argparse.Namespace) -> LuffyOptions:
    """LUFFY's scoring switches from resolved ``args``."""
    return LuffyOptions(args.add_think_before_answer, args.no_split_think, args.add_oat_evaluate, args.any_true)
