"""[mqtt] credentials, [mqtt.tls] and [mqtt.commands]: every mistake named by its key, exit 78."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from bin_agent import preflight
from bin_agent.config import EX_CONFIG, ConfigError
from bin_agent.mqtt.credentials import broker_password
from tests.helpers import base_config, write_toml
from tests.test_mqtt_security import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    make_certs("ca", root)
    make_certs("client", root, "bin-01")
    make_certs("client", root, "other")
    return root


def problems_of(data, tmp_path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    return info.value.problems


def with_mqtt(tmp_path, **mqtt):
    data = base_config(tmp_path)
    data["mqtt"].update(mqtt)
    return data


def test_a_literal_password_is_refused_with_what_to_use(tmp_path):
    problems = problems_of(with_mqtt(tmp_path, username="bin-01", password="hunter2"), tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith("mqtt.password: a password never goes in the config file")
    assert "password_file" in problems[0] and "password_env" in problems[0]
    assert "hunter2" not in problems[0]


def test_password_from_an_environment_variable(tmp_path, monkeypatch):
    data = with_mqtt(tmp_path, username="bin-01", password_env="BIN_AGENT_TEST_PW")
    monkeypatch.delenv("BIN_AGENT_TEST_PW", raising=False)
    assert problems_of(data, tmp_path) == [
        "mqtt.password_env: the environment variable BIN_AGENT_TEST_PW is not set or empty"
    ]
    monkeypatch.setenv("BIN_AGENT_TEST_PW", "from-env")
    assert broker_password(preflight.load_dict(data, base_dir=tmp_path)) == "from-env"


@pytest.mark.parametrize(
    "mqtt, expected",
    [
        (
            {"username": "u", "password_env": "A", "password_file": "pw"},
            "mqtt.password_env: set either password_file or password_env, not both",
        ),
        ({"password_env": "A"}, "mqtt.username: required when mqtt.password_env is set"),
        ({"username": "u", "password_env": "NOT A NAME"}, "mqtt.password_env: 'NOT A NAME' is not an environment"),
        ({"username": "u", "password_file": "missing"}, "mqtt.password_file: "),
    ],
)
def test_credential_mistakes_are_named(tmp_path, monkeypatch, mqtt, expected):
    monkeypatch.setenv("A", "x")
    (tmp_path / "pw").write_text("pw\n")
    problems = problems_of(with_mqtt(tmp_path, **mqtt), tmp_path)
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\xff\xfe\x00binary", "is not UTF-8 text"),
        (b"", "is empty; its first line is the password"),
        (b"\n", "is empty; its first line is the password"),
        (b"pass\x07word\n", "has control characters"),
    ],
)
def test_unusable_password_files_are_named(tmp_path, content, expected):
    (tmp_path / "pw").write_bytes(content)
    problems = problems_of(with_mqtt(tmp_path, username="u", password_file=str(tmp_path / "pw")), tmp_path)
    assert len(problems) == 1 and problems[0].startswith("mqtt.password_file: ") and expected in problems[0]


def test_password_file_first_line(tmp_path):
    (tmp_path / "pw").write_text("s3cret\nignored\n")
    config = preflight.load_dict(
        with_mqtt(tmp_path, username="u", password_file=str(tmp_path / "pw")), base_dir=tmp_path
    )
    assert broker_password(config) == "s3cret"


def test_tls_files_are_checked_and_loaded(tmp_path, certs):
    tls = {
        "enabled": True,
        "ca_file": str(certs / "ca.crt"),
        "cert_file": str(certs / "bin-01.crt"),
        "key_file": str(certs / "bin-01.key"),
    }
    config = preflight.load_dict(with_mqtt(tmp_path, tls=tls), base_dir=tmp_path)
    assert config.mqtt.tls.enabled


@pytest.mark.parametrize(
    "tls, expected",
    [
        ({"ca_file": "ca.crt"}, "mqtt.tls.ca_file: set while mqtt.tls.enabled is false"),
        ({"insecure": True}, "mqtt.tls.insecure: set while mqtt.tls.enabled is false"),
        ({"enabled": True, "cert_file": "bin-01.crt"}, "mqtt.tls.key_file: required when mqtt.tls.cert_file is set"),
        ({"enabled": True, "key_file": "bin-01.key"}, "mqtt.tls.cert_file: required when mqtt.tls.key_file is set"),
        ({"enabled": True, "ca_file": "nope.crt"}, "mqtt.tls.ca_file: "),
        ({"enabled": True, "ca_file": "bin-01.key"}, "mqtt.tls.ca_file: "),
        (
            {"enabled": True, "ca_file": "ca.crt", "cert_file": "bin-01.crt", "key_file": "other.key"},
            "mqtt.tls.key_file: ",
        ),
        (
            {"enabled": True, "ca_file": "ca.crt", "cert_file": "ca.srl", "key_file": "bin-01.key"},
            "mqtt.tls.cert_file: ",
        ),
        ({"enabled": True, "cert_file": "bin-01.crt", "key_file": "missing.key"}, "mqtt.tls.key_file: "),
        ({"enabled": True, "cert_file": "bin-01.crt", "key_file": "encrypted.key"}, "mqtt.tls.key_file: "),
    ],
)
def test_tls_mistakes_are_named(tmp_path, certs, tls, expected):
    for name in ("ca.crt", "bin-01.crt", "bin-01.key", "other.key", "ca.srl"):
        shutil.copy(certs / name, tmp_path / name)
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(certs / "bin-01.key"),
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            str(tmp_path / "encrypted.key"),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    # Relative paths are relative to the config file; here there is none: make them absolute.
    tls = {k: str(tmp_path / v) if k.endswith("_file") else v for k, v in tls.items()}
    problems = problems_of(with_mqtt(tmp_path, tls=tls), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    print(problems[0])


@pytest.mark.parametrize(
    "commands, expected",
    [
        ({"max_bytes": 10}, "mqtt.commands.max_bytes: 10 is below the minimum 64"),
        ({"rate_per_minute": 0}, "mqtt.commands.rate_per_minute: 0.0 is below the minimum 1"),
        ({"allow_reset": "no"}, "mqtt.commands.allow_reset: expected true or false"),
        ({"allow_rest": False}, "mqtt.commands.allow_rest: unknown key; did you mean 'allow_reset'?"),
    ],
)
def test_command_settings_are_validated(tmp_path, commands, expected):
    problems = problems_of(with_mqtt(tmp_path, commands=commands), tmp_path)
    assert any(p.startswith(expected) for p in problems), problems


def test_check_config_and_run_agree_exit_78_without_traceback(tmp_path):
    data = with_mqtt(tmp_path, username="bin-01", password="hunter2")
    path = write_toml(tmp_path / "bad.toml", data)
    for args in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = subprocess.run(
            [sys.executable, "-m", "bin_agent", *args], capture_output=True, text=True, check=False, timeout=60
        )
        assert result.returncode == EX_CONFIG, result.stderr
        assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
        assert "mqtt.password: a password never goes in the config file" in result.stderr
    # Cross-checks run once every key and type is right; the same from both commands.
    data = with_mqtt(tmp_path, username="bin-01", tls={"enabled": True, "cert_file": "client.crt"})
    path = write_toml(tmp_path / "bad.toml", data)
    for args in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = subprocess.run(
            [sys.executable, "-m", "bin_agent", *args], capture_output=True, text=True, check=False, timeout=60
        )
        assert result.returncode == EX_CONFIG, result.stderr
        assert "Traceback" not in result.stderr
        assert "mqtt.tls.key_file: required when mqtt.tls.cert_file is set" in result.stderr


def test_command_settings_reach_the_gate(tmp_path):
    from bin_agent.mqtt.commands import CommandGate, CommandRejected

    data = with_mqtt(tmp_path, commands={"allow_reset": False, "max_bytes": 100, "burst": 2})
    gate = CommandGate.from_config(preflight.load_dict(data, base_dir=tmp_path).mqtt.commands)
    with pytest.raises(CommandRejected, match="reset_counts is disabled"):
        gate.check("reset_counts", b"")
    with pytest.raises(CommandRejected, match="larger than 100 bytes"):
        gate.check("ping", b" " * 101)
    gate.check("ping", b"")  # the second of ping's burst of 2 (each command has its own bucket)
    with pytest.raises(CommandRejected, match="rate limit"):
        gate.check("ping", b"")
