"""The Lua scripts stick to Redis 5.0's commands, the oldest Redis we support
(Debian 11 and Ubuntu 22.04 ship 6.0): an option added later would make every
call of a script fail there."""

from __future__ import annotations

import re

import pytest

from django_jobs.broker.scripts import NAMES, source

# Commands, and options of older commands, that Redis added after 5.0.
NEWER_COMMANDS = {
    "BLMOVE", "COPY", "GETDEL", "GETEX", "HRANDFIELD", "LMOVE", "LPOS", "SMISMEMBER",
    "ZDIFF", "ZDIFFSTORE", "ZINTER", "ZMSCORE", "ZRANDMEMBER", "ZRANGESTORE", "ZUNION",
}  # fmt: skip
NEWER_OPTIONS = {
    "ZRANGE": {"BYSCORE", "BYLEX", "REV", "LIMIT"},
    "ZADD": {"GT", "LT"},
    "SET": {"GET", "KEEPTTL", "EXAT", "PXAT"},
    "EXPIRE": {"NX", "XX", "GT", "LT"},
}
CALL = re.compile(r'(?:rcall|redis\.p?call)\("(\w+)"([^\n]*)')


@pytest.mark.parametrize("name", NAMES)
def test_a_script_uses_only_redis_5_commands(name):
    for command, rest in CALL.findall(source(name)):
        command = command.upper()
        assert command not in NEWER_COMMANDS, f"{name}.lua: {command}"
        options = {word.upper() for word in re.findall(r'"(\w+)"', rest)}
        newer = options & NEWER_OPTIONS.get(command, set())
        assert not newer, f"{name}.lua: {command} {newer}"
        if command in {"LPOP", "RPOP"}:
            assert rest.count(",") == 1, f"{name}.lua: {command} with a count needs 6.2"
