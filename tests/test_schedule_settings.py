"""JOBS['SCHEDULES']: bad entries are system-check errors naming the schedule and the
value; good ones are written into the Schedule table at worker start."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from django_jobs.checks import check_jobs_settings
from django_jobs.models import Schedule
from django_jobs.scheduling.sync import sync_settings

RECORD = "tests.testapp.jobs.record"
NIGHTLY = {"job": RECORD, "cron": "0 2 * * *", "timezone": "Asia/Taipei", "args": ["n"]}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def schedule_errors(schedules):
    jobs = {"REDIS_URL": "redis://127.0.0.1:6379/0", "SCHEDULES": schedules}
    with override_settings(JOBS=jobs):
        return [(e.id, e.msg, e.hint) for e in check_jobs_settings()]


def only_error(schedules):
    ((error_id, message, hint),) = schedule_errors(schedules)
    return error_id, message, hint


class TestChecks:
    def test_a_good_schedule_passes(self):
        full = {
            **NIGHTLY,
            "kwargs": {},
            "queue": "emails",
            "priority": 5,
            "catch_up": "all",
            "catch_up_limit": 3,
        }
        assert schedule_errors({"nightly": NIGHTLY, "full": full}) == []

    @pytest.mark.parametrize("cron", ["61 2 * * *", "0 2 * *", "0 0 30 2 *", "daily"])
    def test_a_bad_cron_is_e006_naming_the_schedule_and_the_value(self, cron):
        error_id, message, hint = only_error({"nightly": {**NIGHTLY, "cron": cron}})
        assert error_id == "django_jobs.E006"
        assert "JOBS['SCHEDULES']['nightly']" in message
        assert repr(cron) in message
        assert "'0 2 * * *'" in hint

    def test_a_bad_time_zone_is_e007_naming_the_schedule_and_the_value(self):
        error_id, message, hint = only_error({"nightly": {**NIGHTLY, "timezone": "Asia/Taipe"}})
        assert error_id == "django_jobs.E007"
        assert "JOBS['SCHEDULES']['nightly']" in message
        assert "'Asia/Taipe'" in message
        assert "IANA" in hint

    def test_an_unknown_job_is_e008_and_suggests_the_registered_name(self):
        typo = "tests.testapp.jobs.recrod"
        error_id, message, _ = only_error({"nightly": {**NIGHTLY, "job": typo}})
        assert error_id == "django_jobs.E008"
        assert f"job {typo!r} is not a registered job" in message
        assert f"Did you mean {RECORD!r}?" in message

    def test_a_dotted_path_that_is_not_registered_is_not_imported(self):
        error_id, message, _ = only_error({"nightly": {**NIGHTLY, "job": "os.system"}})
        assert error_id == "django_jobs.E008"
        assert "'os.system'" in message

    @pytest.mark.parametrize(
        ("schedule", "match"),
        [
            ("0 2 * * *", "must be a dict"),
            ({"cron": "0 2 * * *"}, "has no 'job'"),
            ({**NIGHTLY, "tz": "UTC"}, "unknown key(s) tz"),
            ({**NIGHTLY, "args": "n"}, "args must be a list"),
            ({**NIGHTLY, "kwargs": ["n"]}, "kwargs must be a dict"),
            ({**NIGHTLY, "args": [{1, 2}]}, "argument 0 is a set"),
            ({**NIGHTLY, "queue": "bad queue"}, "'bad queue' is not valid"),
            ({**NIGHTLY, "priority": 500}, "between -100 and 100"),
            ({**NIGHTLY, "catch_up": "some"}, "catch_up must be one of none, last, all"),
            ({**NIGHTLY, "catch_up_limit": 0}, "catch_up_limit must be an int >= 1, got 0"),
        ],
    )
    def test_a_malformed_schedule_is_e005(self, schedule, match):
        error_id, message, _ = only_error({"nightly": schedule})
        assert error_id == "django_jobs.E005"
        assert message.startswith("JOBS['SCHEDULES']['nightly']")
        assert match in message

    def test_a_bad_name_is_e005(self):
        error_id, message, _ = only_error({"nightly report": NIGHTLY})
        assert error_id == "django_jobs.E005"
        assert "'nightly report'" in message

    def test_every_problem_of_a_schedule_is_reported(self):
        errors = schedule_errors({"x": {"job": "nope", "cron": "bad", "timezone": "Nowhere"}})
        assert sorted(e[0] for e in errors) == [
            "django_jobs.E006",
            "django_jobs.E007",
            "django_jobs.E008",
        ]


@pytest.mark.django_db
class TestSync:
    def test_settings_schedules_become_rows_marked_from_settings(self):
        sync_settings({"nightly": NIGHTLY}, T0)
        row = Schedule.objects.get(name="nightly")
        assert (row.job, row.cron, row.timezone, row.args, row.kwargs) == (
            RECORD,
            "0 2 * * *",
            "Asia/Taipei",
            ["n"],
            {},
        )
        assert row.from_settings and row.enabled
        assert (row.catch_up, row.catch_up_limit, row.queue, row.priority) == ("last", 10, "", None)
        assert row.active_since == T0

    def test_a_restart_with_the_same_settings_changes_nothing(self):
        sync_settings({"nightly": NIGHTLY}, T0)
        sync_settings({"nightly": NIGHTLY}, T0 + timedelta(days=1))
        assert Schedule.objects.get().active_since == T0  # missed ticks are still owed

    def test_a_changed_cron_updates_the_row_and_starts_its_ticks_afresh(self):
        sync_settings({"nightly": NIGHTLY}, T0)
        later = T0 + timedelta(days=1)
        sync_settings({"nightly": {**NIGHTLY, "cron": "0 3 * * *"}}, later)
        row = Schedule.objects.get()
        assert (row.cron, row.active_since) == ("0 3 * * *", later)

    def test_changed_arguments_update_the_row_but_keep_its_ticks(self):
        sync_settings({"nightly": NIGHTLY}, T0)
        sync_settings({"nightly": {**NIGHTLY, "args": ["m"]}}, T0 + timedelta(days=1))
        row = Schedule.objects.get()
        assert (row.args, row.active_since) == (["m"], T0)

    def test_a_schedule_paused_in_the_admin_stays_paused_after_a_restart(self):
        sync_settings({"nightly": NIGHTLY}, T0)
        Schedule.objects.update(enabled=False)
        sync_settings({"nightly": NIGHTLY}, T0 + timedelta(days=1))
        assert not Schedule.objects.get().enabled

    def test_a_schedule_removed_from_settings_is_disabled_not_deleted(self, caplog):
        sync_settings({"nightly": NIGHTLY, "hourly": {**NIGHTLY, "cron": "0 * * * *"}}, T0)
        Schedule.objects.create(name="by-hand", job=RECORD, cron="* * * * *")
        with caplog.at_level(logging.WARNING, logger="django_jobs.scheduler"):
            sync_settings({"nightly": NIGHTLY}, T0)
        hourly = Schedule.objects.get(name="hourly")
        assert not hourly.enabled and not hourly.from_settings
        assert Schedule.objects.get(name="nightly").enabled
        assert Schedule.objects.get(name="by-hand").enabled  # not the settings' to touch
        assert "schedule hourly is no longer in JOBS['SCHEDULES']: disabled" in caplog.text

    def test_settings_take_over_a_row_of_the_same_name_and_enable_it(self):
        Schedule.objects.create(name="nightly", job=RECORD, cron="* * * * *", enabled=False)
        sync_settings({"nightly": NIGHTLY}, T0)
        row = Schedule.objects.get()
        assert (row.cron, row.from_settings, row.enabled, row.active_since) == (
            "0 2 * * *",
            True,
            True,
            T0,
        )

    def test_an_invalid_entry_is_logged_and_left_out(self, caplog):
        with caplog.at_level(logging.ERROR, logger="django_jobs.scheduler"):
            sync_settings({"bad": {**NIGHTLY, "cron": "61 * * * *"}, "nightly": NIGHTLY}, T0)
        assert list(Schedule.objects.values_list("name", flat=True)) == ["nightly"]
        assert "Schedule 'bad': cron '61 * * * *' is not a valid cron expression" in caplog.text
