"""deploy/secrets.sh, run as a user who is not root, with the real ``pilotline token create``.

The scrape-token bootstrap of the compose stack used to be ``chmod 0444 secrets/*`` and then
``docker compose exec pilotline pilotline token create ... > secrets/scrape_token``: as
anyone but root the write fails on the read-only file, and ``exec`` without ``-T`` runs the
command on a TTY, whose output (carriage returns, and the command's message on stderr) went
into the file. Here the token comes from the console script itself: through a pipe, as
``exec -T`` gives it, and through a real pseudo-terminal, as ``exec`` without ``-T`` does.
"""

from __future__ import annotations

import os
import pty
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.process import pilotline_command
from tests.sites import machine_config, site_yaml

from pilotline.gateway.store import Store

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).parents[2] / "deploy" / "secrets.sh"
NOBODY = 65534


def as_user(args: list[str]) -> list[str]:
    """``args`` as an unprivileged user: nobody when the tests run as root."""
    if os.geteuid() != 0:
        return args
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]


@pytest.fixture
def deploy() -> Iterator[Path]:
    """A copy of deploy/secrets.sh in a folder the unprivileged user owns (pytest's own
    temporary folders are closed to other users)."""
    with tempfile.TemporaryDirectory(prefix="pilotline-deploy-") as tmp:
        folder = Path(tmp)
        shutil.copy(SCRIPT, folder / "secrets.sh")
        if os.geteuid() == 0:
            os.chown(folder, NOBODY, NOBODY)
            os.chown(folder / "secrets.sh", NOBODY, NOBODY)
        yield folder


def secrets_sh(folder: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        as_user(["sh", str(folder / "secrets.sh"), *args]),
        input=stdin.decode("latin-1"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(site_yaml({"z": [machine_config("m-1")]}, store=tmp_path / "gw.db"))
    return path


def token_create(site: Path, name: str) -> list[str]:
    return [*pilotline_command(), "token", "create", "-c", str(site), "--name", name,
            "--role", "scraper"]


def test_init_makes_a_closed_folder_and_files_as_a_user_who_is_not_root(deploy: Path) -> None:
    done = secrets_sh(deploy, "init")
    assert done.returncode == 0, done.stderr
    secrets = deploy / "secrets"
    assert mode(secrets) == mode(secrets / "influx") == 0o700
    assert mode(secrets / "influx_password") == mode(secrets / "influx_token") == 0o600
    assert mode(secrets / "grafana_password") == 0o640
    assert len((secrets / "influx_token").read_text().strip()) == 64
    # placeholders, so that compose finds every secret's file before they are filled
    for name in ("influx/write_token", "influx/read_token", "scrape_token"):
        assert (secrets / name).read_text() == ""
    gid = NOBODY if os.geteuid() == 0 else os.getegid()
    assert (deploy / ".env").read_text() == f"PILOTLINE_SECRETS_GID={gid}\n"
    # a second run keeps what exists
    before = (secrets / "influx_token").read_text()
    assert secrets_sh(deploy, "init").returncode == 0
    assert (secrets / "influx_token").read_text() == before
    assert (deploy / ".env").read_text().count("PILOTLINE_SECRETS_GID") == 1


def test_the_scrape_token_replaces_a_read_only_file_as_a_user_who_is_not_root(
    deploy: Path, site: Path
) -> None:
    assert secrets_sh(deploy, "init").returncode == 0
    scrape = deploy / "secrets" / "scrape_token"
    scrape.chmod(0o444)  # as the README had it: chmod 0444 secrets/*
    # the README's old step fails for this user
    old = subprocess.run(as_user(["sh", "-c", f"echo x > {scrape}"]), check=False,
                         capture_output=True)
    assert old.returncode != 0
    made = subprocess.run(token_create(site, "prometheus"), capture_output=True, timeout=60,
                          check=True)  # a pipe, as `docker compose exec -T` gives
    done = secrets_sh(deploy, "put", "scrape_token", stdin=made.stdout)
    assert done.returncode == 0, done.stderr
    assert mode(scrape) == 0o640
    token = scrape.read_text()
    assert token.endswith("\n")
    assert token.count("\n") == 1
    assert "\r" not in token
    with Store(site.parent / "gw.db") as store:
        principal, _ = store.tokens().authenticate(token.strip())
    assert principal is not None
    assert principal.role == "scraper"


def test_a_tty_s_output_is_refused_and_the_file_kept(deploy: Path, site: Path) -> None:
    assert secrets_sh(deploy, "init").returncode == 0
    scrape = deploy / "secrets" / "scrape_token"
    assert secrets_sh(deploy, "put", "scrape_token", stdin=b"plt_old\n").returncode == 0
    # the console script on a real pseudo-terminal, as `docker compose exec` without -T runs
    # it: stdout and stderr on the terminal, each newline sent as CR LF
    leader, follower = pty.openpty()
    try:
        subprocess.run(token_create(site, "prometheus"), stdout=follower, stderr=follower,
                       timeout=60, check=True)
        os.close(follower)
        captured = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed and read
                break
            if not chunk:
                break
            captured += chunk
    finally:
        os.close(leader)
    assert b"\r\n" in captured
    assert b"created" in captured  # the message on stderr, mixed into the output
    done = secrets_sh(deploy, "put", "scrape_token", stdin=captured)
    assert done.returncode == 1
    assert "exec -T" in done.stderr
    assert scrape.read_text() == "plt_old\n"
    # without the carriage returns, the message on the same stream is still refused
    done = secrets_sh(deploy, "put", "scrape_token", stdin=captured.replace(b"\r", b""))
    assert done.returncode == 1
    assert "2 lines" in done.stderr
    assert scrape.read_text() == "plt_old\n"


@pytest.mark.parametrize(
    ("stdin", "says"),
    [(b"", "nothing on standard input"), (b"plt_a b\n", "not a token")],
)
def test_what_is_not_one_token_is_refused(deploy: Path, stdin: bytes, says: str) -> None:
    assert secrets_sh(deploy, "init").returncode == 0
    done = secrets_sh(deploy, "put", "scrape_token", stdin=stdin)
    assert done.returncode == 1
    assert says in done.stderr
    assert secrets_sh(deploy, "put", "../elsewhere", stdin=b"plt_a\n").returncode == 1
