"""The command line as users and scripts call it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

XDS_INGRESS = [sys.executable, "-m", "xds_ingress.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*XDS_INGRESS, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["serve", "--source", "{tmp}", "--xds-address", "nope"], "expected HOST:PORT"),
        (["serve", "--source", "{tmp}", "--http-port", "70000"], "out of range"),
        (["serve", "--source", "{tmp}", "--http-port", "http"], "expected a port number"),
        (["serve", "--source", "{tmp}", "--listen-address", "localhost"], "expected an IP"),
        (["serve", "--source", "{tmp}/missing"], "is not a folder"),
        (["serve", "--source", "{tmp}", "--holdoff", "-1"], "seconds >= 0"),
        (
            ["bootstrap", "--xds-address", "1.2.3.4", "--node-id", "a", "--node-cluster", "b"],
            "expected HOST:PORT",
        ),
        (["bootstrap", "--xds-address", "127.0.0.1:1"], "required"),
        (["serve", "--source", "{tmp}", "--tls-min-version", "1.0"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_values_exit_non_zero_with_one_line(
    tmp_path: Path, args: list[str], complaint: str
) -> None:
    result = run(*(arg.replace("{tmp}", str(tmp_path)) for arg in args))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert complaint in lines[0]
    assert result.stdout == ""


def test_bootstrap_is_ads_delta_by_default_and_sotw_on_request() -> None:
    common = ["--xds-address", "127.0.0.1:18000", "--node-id", "envoy-7", "--node-cluster", "edge"]
    delta = json.loads(run("bootstrap", *common, "--insecure").stdout)
    sotw = json.loads(run("bootstrap", *common, "--insecure", "--sotw").stdout)
    assert delta["node"] == {"id": "envoy-7", "cluster": "edge"}
    assert delta["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert sotw["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"


def test_serve_logs_json_lines_and_names_a_broken_file(tmp_path: Path) -> None:
    from peers import free_port

    (tmp_path / "broken.yaml").write_text("kind: Service\nmetadata: [unclosed\n")
    (tmp_path / "good.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: d}\n"
        "spec: {ports: [{name: grpc, port: 1}]}\n"
    )
    process = subprocess.Popen(
        [
            *XDS_INGRESS,
            "serve",
            "--source",
            str(tmp_path),
            "--log-format",
            "json",
            "--xds-address",
            f"127.0.0.1:{free_port()}",
            "--http-port",
            str(free_port()),
            "--insecure",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    records = []
    try:
        for line in process.stderr:
            records.append(json.loads(line))
            if "published snapshot" in records[-1]["message"]:
                break
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
    warnings = [r for r in records if r["level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert "broken.yaml" in warnings[0]["message"]
    assert {"time", "logger", "message"} <= set(warnings[0])


def test_bootstrap_needs_client_certificates_or_insecure() -> None:
    common = ["--xds-address", "127.0.0.1:18000", "--node-id", "e", "--node-cluster", "c"]
    result = run("bootstrap", *common)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "pass --xds-tls-cert, --xds-tls-key, --xds-ca (or --insecure" in line
    plain = json.loads(run("bootstrap", *common, "--insecure").stdout)
    assert "transport_socket" not in plain["static_resources"]["clusters"][0]


def test_bootstrap_with_certificates_presents_one_and_checks_the_server() -> None:
    result = run(
        "bootstrap",
        "--xds-address",
        "xds.example.svc:18000",
        "--xds-address",
        "10.0.0.7:18000",
        "--node-id",
        "e",
        "--node-cluster",
        "c",
        "--xds-tls-cert",
        "/etc/xds/tls.crt",
        "--xds-tls-key",
        "/etc/xds/tls.key",
        "--xds-ca",
        "/etc/xds/ca.crt",
    )
    assert result.returncode == 0, result.stderr
    (cluster,) = json.loads(result.stdout)["static_resources"]["clusters"]
    hosts = [
        endpoint["endpoint"]["address"]["socket_address"]["address"]
        for endpoint in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert hosts == ["xds.example.svc", "10.0.0.7"]
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "xds.example.svc"
    common = tls["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": "/etc/xds/tls.crt"},
            "private_key": {"filename": "/etc/xds/tls.key"},
        }
    ]
    assert common["validation_context"] == {
        "trusted_ca": {"filename": "/etc/xds/ca.crt"},
        "match_typed_subject_alt_names": [
            {"san_type": "DNS", "matcher": {"exact": "xds.example.svc"}}
        ],
    }
