"""Cron schedules: the tick math (cron.py), what a schedule is (definition.py), the
SCHEDULES setting written into the Schedule table (sync.py), and the scheduler
thread that runjobs embeds (scheduler.py)."""
