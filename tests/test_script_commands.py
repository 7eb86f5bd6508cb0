"""The Lua scripts stick to Redis 5.0's commands, the oldest Redis we support
(Debian 11 and Ubuntu 22.04 ship 6.0): a command or option added later would
make every call of a script fail there. CI runs a newer Redis, so this check is
what keeps that promise: a command new to the scripts must be added below, after
checking the Redis version that introduced it (and each option it is given)."""

from __future__ import annotations

import re

import pytest

from django_jobs.broker.scripts import NAMES, source

# Every command the scripts may call, each in Redis 5.0 (HSET with several pairs:
# 4.0; ZPOPMIN: 5.0; the rest older: the set commands, ZCARD and ZSCORE by 2.4;
# ZREVRANGEBYSCORE with LIMIT and WITHSCORES: 2.2).
REDIS_5_COMMANDS = {
    "DEL", "EXISTS", "EXPIRE", "GET", "HDEL", "HEXISTS", "HGET", "HINCRBY", "HMGET",
    "HSET", "INCR", "INCRBY", "LLEN", "LPOP", "LPUSH", "LRANGE", "LREM", "LTRIM", "PERSIST",
    "PTTL", "RENAME", "RPUSH",
    "SADD", "SCARD", "SET", "SMEMBERS", "SREM", "TIME", "TYPE", "ZADD", "ZCARD", "ZPOPMIN",
    "ZRANGE",
    "ZRANGEBYSCORE", "ZREM", "ZREMRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZSCORE", "ZUNIONSTORE",
}  # fmt: skip
# (LPOP's count argument needs 6.2: the scripts pop one at a time.)
# Options that later versions added to commands of that list.
NEWER_OPTIONS = {
    "ZRANGE": {"BYSCORE", "BYLEX", "REV", "LIMIT"},
    "ZADD": {"GT", "LT"},
    "SET": {"GET", "KEEPTTL", "EXAT", "PXAT"},
    "EXPIRE": {"NX", "XX", "GT", "LT"},
}
CALL = re.compile(r"(?:\brcall|\bredis\.p?call)\(")
ALIAS = "local rcall = redis.call\n"


def arguments(text: str, start: int) -> str:
    """The text between the parentheses of a call opened at ``start``."""
    depth = 1
    for end in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end]
    raise AssertionError("unbalanced parentheses")


@pytest.mark.parametrize("name", NAMES)
def test_a_script_calls_only_redis_5_commands(name):
    text = source(name)
    # The one alias of redis.call; any other (or a bare reference) could hide a call.
    assert len(re.findall(r"redis\.p?call(?!\()", text)) == text.count(ALIAS) <= 1
    calls = 0
    for match in CALL.finditer(text):
        args = arguments(text, match.end())
        command = re.match(r'\s*"(\w+)"', args)
        assert command, f"{name}.lua: a command name that is not a literal: {args[:40]!r}"
        command = command[1].upper()
        assert command in REDIS_5_COMMANDS, f"{name}.lua: {command} is not checked for 5.0"
        options = {word.upper() for word in re.findall(r'"(\w+)"', args)}
        newer = options & NEWER_OPTIONS.get(command, set())
        assert not newer, f"{name}.lua: {command} {newer} needs a newer Redis"
        if command in {"LPOP", "RPOP"}:
            assert args.count(",") == 1, f"{name}.lua: {command} with a count needs 6.2"
        calls += 1
    assert calls


def test_the_check_sees_nested_calls_and_options():
    """The check itself: a nested call, a 6.2 option, a name held in a variable."""
    nested = 'rcall("RPUSH", k, rcall("LMOVE", a, b, "LEFT", "RIGHT"))'
    found = [arguments(nested, m.end()) for m in CALL.finditer(nested)]
    assert [re.match(r'\s*"(\w+)"', a)[1] for a in found] == ["RPUSH", "LMOVE"]
    assert "BYSCORE" in NEWER_OPTIONS["ZRANGE"]
    assert not re.match(r'\s*"(\w+)"', arguments("rcall(cmd, k)", 6))
