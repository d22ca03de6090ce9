"""The README against the command line: every flag it names exists, every choice list it gives
(`--flag a|b|c`) is the flag's own, and every option of a command that is not a generated
RunConfig flag is named in it, so neither can drift from the other."""

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest

from digitcmp.cli import build_parser
from digitcmp.core.config import RunConfig

README = (Path(__file__).parents[1] / "README.md").read_text()


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings if o.startswith("--")}


GENERATED = {f"--{p}{f.name.replace('_', '-')}" for f in fields(RunConfig) for p in ("", "no-")}
OTHER_TOOLS = {"--no-deps", "--write"}  # pip's (the install for comparing digits only); the reproduction check's


def test_every_flag_the_readme_names_exists():
    every = set().union(*(options(p) for p in commands().values()))
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README)) - OTHER_TOOLS
    assert named and not (named - every), sorted(named - every)


@pytest.mark.parametrize("command", list(commands()))
def test_every_option_of_a_command_is_in_the_readme(command):
    """The flags generated from RunConfig's fields are covered by the README's "a flag for every
    other RunConfig field"; every other option is named."""
    missing = sorted(set(options(commands()[command])) - GENERATED - {"--help"} - set(re.findall(r"--[a-z0-9-]+", README)))
    assert not missing, missing


def test_every_choice_list_in_the_readme_is_the_flags_own():
    lists = re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*) ([a-z0-9_.]+(?:\|[a-z0-9_.]+)+)", README)
    assert lists
    for flag, written in lists:
        actions = [options(p)[flag] for p in commands().values() if flag in options(p)]
        assert actions, flag
        for action in actions:
            if action.choices:
                assert set(written.split("|")) == set(action.choices), (flag, written, list(action.choices))


def test_every_command_is_in_the_readme():
    for command in commands():
        assert f"digitcmp {command}" in README, command
