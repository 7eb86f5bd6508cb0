"""Settings of a test project with no REDIS_URL and DEBUG on: it gets the embedded
Redis kept under DJANGO_JOBS_TEST_BASE_DIR."""

import os
from pathlib import Path

from tests.settings import *  # noqa: F403
from tests.settings import JOBS

DEBUG = True
BASE_DIR = Path(os.environ["DJANGO_JOBS_TEST_BASE_DIR"])
JOBS = {key: value for key, value in JOBS.items() if key != "REDIS_URL"}
