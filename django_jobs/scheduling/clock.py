"""Redis' clock as a datetime, for moments the schedulers compare with their ticks.

Every scheduler reads "now" from Redis (see ``RedisClock``), so a moment written
from a web host's clock (a schedule created, resumed or retimed in the admin)
would be off by as much as that host's clock is: an hour ahead, and the schedule
skips an hour of ticks.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.utils import timezone
from redis.exceptions import RedisError

from django_jobs.broker.connection import get_broker

logger = logging.getLogger("django_jobs.scheduler")


def server_now() -> datetime:
    """Redis' time now; this host's time only when Redis cannot be reached (no tick
    can be enqueued then anyway), with a warning."""
    try:
        milliseconds = get_broker().server_time_ms()
    except RedisError as error:
        logger.warning(
            "Redis is unreachable (%s): a schedule's active_since is taken from this host's clock",
            type(error).__name__,
        )
        return timezone.now()
    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
