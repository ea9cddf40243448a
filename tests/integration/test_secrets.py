"""No secret in anything the gateway says: logs, errors, /health, /metrics, /openapi.json.

The real console script runs against a Mosquitto that requires a password and a
victoria-metrics that is sent an InfluxDB token, with debug logs; the test calls the API with
a valid and a wrong token, has ``check`` refuse inline secrets, then greps everything printed
and every body for the secret values.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from tests.auth import cli_bearer
from tests.integration.test_cli import pilotline, pilotline_command
from tests.peers import VictoriaMetrics, find_victoria_metrics

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
    pytest.mark.skipif(find_victoria_metrics() is None, reason="victoria-metrics is not installed"),
]

MQTT_PASSWORD = "mqtt-Secret-7f3a9c"
INFLUX_TOKEN = "influx-Secret-41be07"
WRONG_TOKEN = "plt_deadbeef_" + "W" * 43

CONFIG = """\
site: secrets
mqtt:
  url: {mqtt_url}
  username: gateway
  password_file: mqtt-password
influx: {{url: "{influx_url}", org: pilot, bucket: pilotline, token_file: influx-token}}
store: gw.db
api: 127.0.0.1:{port}
log: {{level: debug, format: json}}
zones:
  - id: z
    machines:
      - {{id: m-01, owner: acme-optics, mqtt: {{topic: t/m-01}}, state: {{signal: state}}}}
"""


def test_no_secret_in_any_output(tmp_path: Path) -> None:
    passwords = tmp_path / "mosquitto-passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "gateway", MQTT_PASSWORD],
        check=True, capture_output=True,
    )
    broker = MosquittoBroker(persistence=False, datadir=tmp_path / "mosq")
    broker.conf.write_text(
        broker.conf.read_text().replace("allow_anonymous true\n", "allow_anonymous false\n")
        + f"password_file {passwords}\n"
    )
    vm = VictoriaMetrics().start()
    broker.start()
    outputs: list[str] = []
    try:
        (tmp_path / "mqtt-password").write_text(MQTT_PASSWORD + "\n")
        (tmp_path / "influx-token").write_text(INFLUX_TOKEN + "\n")
        port = free_port()
        config = tmp_path / "site.yaml"
        config.write_text(CONFIG.format(mqtt_url=broker.url, influx_url=vm.url, port=port))
        auth = cli_bearer(pilotline_command(), config)
        api_token = auth["Authorization"].split()[1]
        out, err = tmp_path / "out.log", tmp_path / "err.log"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                [*pilotline_command(), "run", "-c", str(config)],
                stdout=o, stderr=e, stdin=subprocess.DEVNULL,
            )
        api = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    health = httpx.get(f"{api}/health", timeout=2)
                    if health.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, err.read_text()[-2000:]
                time.sleep(0.2)
            outputs.append(health.text)
            for path in ("/metrics", "/openapi.json", "/api/machines", "/api/capacity"):
                answer = httpx.get(f"{api}{path}", headers=auth, timeout=2)
                assert answer.status_code == 200, (path, answer.text)
                outputs.append(answer.text)
            refused = httpx.get(
                f"{api}/api/machines", headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
            )
            assert refused.status_code == 401
            outputs.append(refused.text)
            outputs.append(httpx.get(f"{api}/metrics", headers=auth, timeout=2).text)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        outputs += [out.read_text(), err.read_text()]
        assert '"event": "api.access"' in outputs[-1] + outputs[-2]
        assert '"event": "api.auth_failed"' in outputs[-1] + outputs[-2]

        # an inline secret is refused, and the refusal does not repeat it
        inline = tmp_path / "inline.yaml"
        inline.write_text(
            config.read_text()
            .replace("password_file: mqtt-password", f"password: {MQTT_PASSWORD}")
            .replace("token_file: influx-token", f"token: {INFLUX_TOKEN}")
        )
        checked = pilotline("check", "-c", str(inline))
        assert checked.returncode == 1
        assert "mqtt.password: secrets are not accepted inline" in checked.stderr
        assert "influx.token: secrets are not accepted inline" in checked.stderr
        outputs += [checked.stdout, checked.stderr]
    finally:
        broker.close()
        vm.close()
    everything = "\n".join(outputs)
    for secret in (MQTT_PASSWORD, INFLUX_TOKEN, api_token, WRONG_TOKEN, api_token[13:]):
        assert secret not in everything
