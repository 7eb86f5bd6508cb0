"""Redis as users run it: TLS (with client certificates), ACL users, a unix socket.
Each test starts its own server and runs real enqueues and a real worker on it."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.views.debug import SafeExceptionReporterFilter
from redis.exceptions import ConnectionError as RedisConnectionError

from django_jobs.broker.connection import get_broker
from django_jobs.broker.servers import parse_cluster_url, parse_sentinel_url, redacted
from django_jobs.checks import check_jobs_settings
from django_jobs.conf import parse
from tests.helpers import run_burst
from tests.redis_servers import SERVER_BINARIES, Certificates, Server, tls_server
from tests.testapp import jobs
from tests.testapp.models import Effect

SECRET = "pa55-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def certificates():
    directory = Path(tempfile.mkdtemp(prefix="django-jobs-tls-"))
    return Certificates(directory)


def tls_options(certificates: Certificates, client_certificate: bool = True) -> dict:
    options = {"ssl_ca_certs": str(certificates.ca), "ssl_cert_reqs": "required"}
    if client_certificate:
        options |= {
            "ssl_certfile": str(certificates.client_cert),
            "ssl_keyfile": str(certificates.client_key),
        }
    return options


@pytest.fixture
def server_cleanup():
    started: list[Server] = []
    yield started
    for server in started:
        server.cleanup()


def jobs_settings(settings, url: str, options: dict | None = None):
    return override_settings(
        JOBS={**settings.JOBS, "REDIS_URL": url, "REDIS_OPTIONS": options or {}}
    )


# -- TLS ------------------------------------------------------------------------


@pytest.mark.redis_only
@pytest.mark.django_db(transaction=True)
def test_tls_with_a_client_certificate_runs_jobs_through_a_real_worker_process(
    certificates, settings, server_cleanup, worker_processes
):
    server = tls_server(certificates, client_certificates=True)
    server_cleanup.append(server)
    with jobs_settings(settings, f"rediss://127.0.0.1:{server.port}/0", tls_options(certificates)):
        assert check_jobs_settings() == []
        handles = [jobs.record.enqueue(f"tls-{i}") for i in range(20)]
        output = worker_processes.wait(worker_processes.start("--burst"), timeout=60)
        assert [handle.refresh().status for handle in handles] == ["succeeded"] * 20, output
        assert Effect.objects.filter(key__startswith="tls-").count() == 20


@pytest.mark.redis_only
@pytest.mark.django_db(transaction=True)
def test_a_tls_server_that_wants_a_client_certificate_refuses_a_client_without_one(
    certificates, settings, server_cleanup
):
    server = tls_server(certificates, client_certificates=True)
    server_cleanup.append(server)
    options = tls_options(certificates, client_certificate=False)
    url = f"rediss://127.0.0.1:{server.port}/0"
    with jobs_settings(settings, url, options), pytest.raises(RedisConnectionError):
        get_broker().server_time_ms()


@pytest.mark.redis_only
def test_a_server_certificate_from_another_ca_is_refused(certificates, settings, server_cleanup):
    server = tls_server(certificates, client_certificates=False)
    server_cleanup.append(server)
    stranger = Certificates(Path(tempfile.mkdtemp(prefix="django-jobs-tls-other-")))
    options = {"ssl_ca_certs": str(stranger.ca), "ssl_cert_reqs": "required"}
    url = f"rediss://127.0.0.1:{server.port}/0"
    with (
        jobs_settings(settings, url, options),
        pytest.raises(RedisConnectionError, match="certificate verify failed"),
    ):
        get_broker().server_time_ms()


# -- ACL users ------------------------------------------------------------------


@pytest.fixture(params=sorted(SERVER_BINARIES))
def acl_server(request, server_cleanup, jobs_prefix):
    """A server whose default user needs a password, with a user granted what the
    docs say django-jobs needs and a user that may only read (ACLs: Redis 6.0+)."""
    binary = SERVER_BINARIES[request.param]
    if binary is None:
        pytest.skip(f"{request.param}: no such server installed here")
    admin_password = uuid.uuid4().hex
    server = Server(
        ["--requirepass", admin_password], connect={"password": admin_password}, binary=binary
    )
    server_cleanup.append(server.start())
    admin = server.client()
    prefix = jobs_prefix
    admin.acl_setuser(
        "jobs",
        enabled=True,
        passwords=[f"+{SECRET}"],
        keys=[f"{prefix}:*", f"{{{prefix}:*", f"{{{prefix}}}:*"],
        commands=["+@all", "-@dangerous", "+info"],
    )
    admin.acl_setuser(
        "reader", enabled=True, passwords=[f"+{SECRET}"], keys=["*"], commands=["+@read", "+ping"]
    )
    admin.close()
    return server


@pytest.mark.redis_only
@pytest.mark.parametrize("credentials_in", ["url", "options"])
@pytest.mark.django_db(transaction=True)
def test_an_acl_user_granted_the_documented_rules_runs_jobs(settings, acl_server, credentials_in):
    if credentials_in == "url":
        url, options = f"redis://jobs:{SECRET}@127.0.0.1:{acl_server.port}/0", {}
    else:
        url = f"redis://127.0.0.1:{acl_server.port}/0"
        options = {"username": "jobs", "password": SECRET}
    with jobs_settings(settings, url, options):
        handles = [jobs.fails_twice.enqueue(f"acl-{i}") for i in range(3)]
        handles.append(jobs.always_fails.enqueue("acl-dead"))
        run_burst()
        assert [handle.refresh().status for handle in handles] == ["succeeded"] * 3 + ["dead"]
        assert jobs.record.using(delay=60).enqueue("acl-cancel").cancel() == "cancelled"


@pytest.mark.redis_only
@pytest.mark.django_db(transaction=True)
def test_an_acl_user_without_the_commands_gets_a_clear_error_at_start_up(
    settings, acl_server, worker_processes
):
    url = f"redis://reader:{SECRET}@127.0.0.1:{acl_server.port}/0"
    with jobs_settings(settings, url):
        process = worker_processes.start("--burst")
        output = worker_processes.wait(process, timeout=60)
    assert process.returncode != 0
    assert "does not let django-jobs' user do what a worker does" in output
    assert "ACL SETUSER" in output
    assert "Traceback" not in output
    assert SECRET not in output
    assert f"reader:***@127.0.0.1:{acl_server.port}" in output


@pytest.mark.redis_only
@pytest.mark.django_db(transaction=True)
def test_a_wrong_password_is_a_clear_error_that_never_shows_the_password(
    settings, acl_server, capsys
):
    url = f"redis://jobs:{SECRET}-wrong@127.0.0.1:{acl_server.port}/0"
    with jobs_settings(settings, url):
        refused_without_showing(SECRET)
    shown = capsys.readouterr()
    assert SECRET not in shown.out + shown.err


# -- unix socket ----------------------------------------------------------------


@pytest.mark.redis_only
@pytest.mark.django_db(transaction=True)
def test_a_unix_socket_url_runs_jobs(settings, server_cleanup):
    directory = Path(tempfile.mkdtemp(prefix="dj-sock-"))
    socket_path = directory / "redis.sock"
    server = Server(
        ["--unixsocket", str(socket_path), "--unixsocketperm", "700"], directory=directory
    )
    server_cleanup.append(server.start())
    with jobs_settings(settings, f"unix://{socket_path}?db=0"):
        handle = jobs.record.enqueue("over-a-socket")
        run_burst()
        assert handle.refresh().status == "succeeded"


# -- settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("rediss://h:6380/0", {"ssl_ca_cert": "/ca.pem"}, "unknown option(s) ssl_ca_cert"),
        ("redis://h:6379/0", {"ssl_ca_certs": "/ca.pem"}, "is not a TLS URL"),
        ("rediss://h:6380/0", {"ssl_cert_reqs": "always"}, "one of required, optional, none"),
        ("rediss://h:6380/0", {"password": ""}, "must be a string, got ***"),
        ("redis://h:6379/0", {"sentinel_kwargs": {}}, "only for a redis+sentinel://"),
        ("redis+sentinel://s1:26379/", {}, "needs /service_name"),
        ("redis+sentinel://s1:x/mymaster", {}, "'s1:x' is not host:port"),
        ("redis://h:6379/0", ["ssl"], "must be a dict"),
        ("redis+cluster://a:s3cret@/", {}, "names no node"),
        ("redis+cluster://n1:6379/3", {}, "has only database 0"),
        ("redis+cluster://n1:x/", {}, "'n1:x' is not host:port"),
        ("redis+sentinel://s1/m", {"cluster": True}, "is for a redis:// or rediss://"),
        ("redis://h:6379/0", {"cluster": "yes"}, "must be True or False"),
    ],
)
def test_bad_redis_options_are_a_system_check_error(settings, url, options, message):
    with override_settings(JOBS={"REDIS_URL": url, "REDIS_OPTIONS": options}):
        ((error,),) = [check_jobs_settings()]
    assert error.id == "django_jobs.E001"
    assert message in error.msg


def test_a_missing_certificate_file_is_a_system_check_error():
    jobs_setting = {"REDIS_URL": "rediss://h:6380/0", "REDIS_OPTIONS": {"ssl_ca_certs": "/no.pem"}}
    with override_settings(JOBS=jobs_setting):
        ((error,),) = [check_jobs_settings()]
    assert error.id == "django_jobs.E020"
    assert "/no.pem" in error.msg


def test_a_sentinel_url_names_its_sentinels_service_and_database():
    found = parse_sentinel_url("redis+sentinel://app:pw@s1:26379,s2,[::1]:26380/mymaster/2")
    assert found.sentinels == [("s1", 26379), ("s2", 26379), ("::1", 26380)]
    assert (found.service_name, found.db, found.username, found.password) == (
        "mymaster",
        2,
        "app",
        "pw",
    )
    assert parse({"REDIS_URL": "redis+sentinel://s1/mymaster"}).redis_url


def test_a_cluster_url_names_its_nodes_and_credentials():
    found = parse_cluster_url("rediss+cluster://app:pw@n1:7000,n2,[::1]:7001/")
    assert found.nodes == [("n1", 7000), ("n2", 6379), ("::1", 7001)]
    assert (found.username, found.password, found.tls) == ("app", "pw", True)
    assert parse({"REDIS_URL": "redis+cluster://n1:7000"}).redis_url
    assert parse({"REDIS_URL": "redis://n1:7000", "REDIS_OPTIONS": {"cluster": True}})


def test_a_bad_cluster_url_error_never_shows_the_password():
    with override_settings(JOBS={"REDIS_URL": f"redis+cluster://app:{SECRET}@n1:x/"}):
        ((error,),) = [check_jobs_settings()]
    assert SECRET not in error.msg
    assert "app:***@" in error.msg


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:s3cret@h:6379/0", "redis://app:***@h:6379/0"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://h:6380/0?password=s3cret&db=1", "rediss://h:6380/0?password=***&db=1"),
        ("redis+sentinel://a:s3cret@s1,s2/m/0", "redis+sentinel://a:***@s1,s2/m/0"),
        ("redis+cluster://a:s3cret@n1:7000,n2/", "redis+cluster://a:***@n1:7000,n2/"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    assert redacted(url) == shown


def test_a_password_in_redis_options_is_hidden_by_djangos_error_reports_too():
    """Django's debug page and error e-mails list settings; they hide keys that look
    secret, which REDIS_OPTIONS['password'] does and REDIS_URL does not (the docs
    say so)."""
    shown = SafeExceptionReporterFilter().cleanse_setting(
        "JOBS", {"REDIS_URL": "redis://h:6379/0", "REDIS_OPTIONS": {"password": SECRET}}
    )
    assert SECRET not in str(shown)


def refused_without_showing(secret: str) -> None:
    """Credentials Redis refuses: runjobs stops with one clear line and health
    fails, neither showing the password."""
    with pytest.raises(CommandError) as raised:
        call_command("runjobs", "--burst")
    assert "refused django-jobs' credentials" in str(raised.value)
    assert secret not in str(raised.value)
    with pytest.raises(SystemExit):
        call_command("jobs", "health")
